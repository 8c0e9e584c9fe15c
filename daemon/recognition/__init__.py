"""The recognizer: the transducer on ONNX Runtime, greedy and beam search, the device LM
and contextual biasing."""
