"""Placeholder: AutoModel is being written (model loading helper)."""


class AutoModel:
    """Picks the model class from model_config.json (implementation pending)."""
