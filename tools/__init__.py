"""Build and probe scripts; ``tools.fmnist`` is the Fashion-MNIST toolchain shared by the sample models, the zoo and
the fixtures."""
