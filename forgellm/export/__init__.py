"""Export a trained model: merged Hugging Face folder, GGUF files for llama.cpp/Ollama, model card."""
