"""Image classification: ImageFolder and synthetic data, the recipes' transforms, the training task,
centre / 10-crop / multi-scale evaluation."""
