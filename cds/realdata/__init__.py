"""Real images with expert labels, used to validate the image network (never to train the
default model): readers that turn a public data set into model-sized images and masks."""
