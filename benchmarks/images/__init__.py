"""The image pipeline: decoding, the image cache, crops, nvJPEG, and the loaders."""
