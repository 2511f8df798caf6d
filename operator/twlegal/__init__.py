"""twlegal: one LegalModelRelease YAML -> a fine-tuned, evaluated and served Taiwan-legal LLM."""

__version__ = "0.1.0"
