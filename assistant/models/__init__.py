"""Base models and their files:

    catalog.py    base models that install from the package index, pinned by wheel hashes and file sha256
    loading.py    finding a base (catalog name, GGUF file, folder, hub id), converting a GGUF once, loading
                  it quantized or not, sharing it between variants, attaching adapters
    export.py     every GGUF file we write or pick: a base, a LoRA adapter, an adapter merged into its base,
                  and which GGUF file a variant runs on llama.cpp
"""
