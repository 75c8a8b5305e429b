"""Forge over HTTP: `forge ui` (the project's dashboard) and `forge serve` (an OpenAI-compatible API).

app.py builds the FastAPI app, security.py guards it (loopback, token, names), launch.py runs it with
uvicorn. FastAPI, uvicorn and the models load only when a web command runs.
"""
