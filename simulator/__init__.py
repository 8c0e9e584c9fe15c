"""The world around the device: the cloud-rescoring service and its language models."""
