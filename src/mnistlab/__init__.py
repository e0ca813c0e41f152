"""mnistlab: design, train and analyse tiny CNNs on MNIST."""

__version__ = "0.1.0"
