"""`forge cloud`: a SkyPilot task built from the project (gpus, task), checked with SkyPilot's own parser,
launched and followed through SkyPilot's Python API (sky_api), with the cluster recorded (state).

SkyPilot is optional (`pip install 'forgellm[cloud]'`) and imported only inside sky_api's functions."""
