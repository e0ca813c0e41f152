"""What one does with a model or a checkpoint: ``analysis`` (shapes, parameters, MACs, receptive fields),
``evaluation``, ``predict`` (a photo of a digit), ``export`` (ONNX), ``insight`` and ``demo`` (the page that
shows each layer's view), ``plots``."""
