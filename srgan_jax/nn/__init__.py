"""The networks and their losses: SRResNet, the discriminator, VGG19 and LPIPS
features, their weight files."""
