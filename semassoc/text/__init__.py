"""Product text: prompt templates, the encoder and its vector cache."""
