"""assistant: build a domain chat assistant from prompts and adapters, evaluate it, serve the winner.

Importing the package is cheap: torch, transformers and gradio load only when a function needs them.
"""

__version__ = "0.1.0"
