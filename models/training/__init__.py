"""Training and evaluation of the zoo's small models on synthetic scenes."""
