"""Pixels: reading image files, MATLAB bicubic resizing, the LR degradation, the
symmetries of the square."""
