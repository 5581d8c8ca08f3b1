"""Training: co-purchase pairs and encoder fine-tuning."""
