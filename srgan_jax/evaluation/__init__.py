"""Scoring generators by the SR literature's conventions: PSNR/SSIM, NIQE, LPIPS,
tables, learning curves, and the evaluator that training runs."""
