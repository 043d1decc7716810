"""Files shipped inside the package (e.g. the default LoRA adapter for ml-100k)."""
