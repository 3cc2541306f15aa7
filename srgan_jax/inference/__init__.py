"""Using a generator: loading it (a workdir's or a shipped one by name), seamless
tiles, image files in and out, shipping one."""
