"""Using a generator: seamless tiles, image files in and out, exporting one as a
pretrained model (which model a reference names: ``training/model_reference``)."""
