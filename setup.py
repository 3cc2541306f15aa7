"""srgan_jax: SRGAN (Ledig et al., CVPR 2017) in JAX/Flax."""

import setuptools

setuptools.setup(
    name='srgan_jax',
    version='0.1.0',
    description='Photo-realistic 4x super-resolution (SRResNet / SRGAN) in JAX/Flax',
    packages=setuptools.find_packages(include=['srgan_jax', 'srgan_jax.*']),
    # The shipped generators (srgan_jax.pretrained), loadable by name after install, and
    # NIQE's pristine-model parameters (see srgan_jax/evaluation/niqe_pristine.md).
    package_data={'srgan_jax': ['pretrained_models/*.msgpack', 'pretrained_models/*.json'],
                  'srgan_jax.evaluation': ['niqe_pristine.npz', 'niqe_pristine.md']},
    python_requires='>=3.11',
    # Beside an existing JAX (an accelerator image without network), `pip install
    # --no-deps -e .` and the few wheels launch/README.md lists are enough: the models,
    # train steps, device data source, checkpoints, benchmark, evaluate and
    # super_resolve never import tensorflow, tensorflow-datasets or tensorboard
    # (tests/system/tf_free_test.py). They stay here, not in an extra, because the
    # quickstart's `pip install -e .` then trains through tf.data with TensorBoard logs.
    install_requires=[
        # jax.set_mesh is new in 0.7.1. Tested with 0.10.2 (Python 3.11, the suite) and
        # 0.11.2 (Python 3.12, flax 0.12.12, orbax-checkpoint 0.12.8, no tensorflow: the
        # unit tests of the convolution, models, metrics, device data source and
        # summaries, and tests/system/tf_free_test.py, which trains both phases,
        # evaluates and super-resolves; steps_test.py ran 1 of 14 before a time-out on
        # a loaded machine). jax 0.11 needs Python >= 3.12: 3.11 installs take 0.10.
        'jax>=0.7.1,<0.12',
        'flax>=0.11,<0.13',
        'optax>=0.2.5,<0.3',
        'orbax-checkpoint>=0.11.20,<0.13',
        # tf.data and TFDS only (data.source 'folders' and 'tfds'); without them a run
        # with data.source='device' still trains (config_rules names what is missing).
        'tensorflow-cpu>=2.18,<2.22',
        'tensorflow-datasets>=4.9.7,<4.10',
        # clu's TensorBoard writer needs it (tensorflow-cpu 2.21 no longer pulls it in);
        # without it summaries are JSON lines (srgan_jax/evaluation/summaries.py).
        'tensorboard>=2.18,<2.22',
        'numpy>=1.26,<3',
        'ml-collections>=1.0,<2',
        'clu>=0.0.12,<0.1',
        'absl-py>=2.1',
        'pillow>=10',
        'tqdm>=4.60',  # Progress bars of super_resolve.
        'matplotlib>=3.8',  # Learning-curve plots (srgan_jax.plot).
        # Sample photographs for the offline quickstart ship inside its wheel.
        'scikit-image>=0.24,<0.27',
    ],
    extras_require={
        # JAX's CUDA 13 wheels, as JAX recommends: NVIDIA driver >= 580 on Linux.
        'gpu': ['jax[cuda13]>=0.7.1,<0.12'],
        # For drivers from 525 to 579 (CUDA 12).
        'gpu-cuda12': ['jax[cuda12]>=0.7.1,<0.12'],
        'tpu': ['jax[tpu]>=0.7.1,<0.12'],
        # The benchmark's PyTorch comparison and export --format=torch (its .pt2 files
        # written, loaded and tested with torch 2.13.0).
        'torch': ['torch>=2.4'],
        # export --format=litert: TensorFlow's TFLiteConverter (a core dependency above)
        # writes the .tflite, LiteRT's runtime (a 22 MB wheel, tested with 2.3.0) runs it.
        'litert': ['ai-edge-litert>=2.3,<3'],
        # 2.13.0 is pinned so that test machines take the local CPU wheel rather than
        # the newest CUDA build with several GB of dependencies.
        # lpips: the reference LPIPS that tests/unit/nn/lpips_test.py compares against (pure Python,
        # 54 kB, with its linear-layer weights). It pulls in torchvision (7.7 MB, no second
        # torch), which does not import beside the CPU torch; the test gives lpips a
        # stand-in torchvision instead, so nothing imports the real one.
        # Exports verified in their runtimes (srgan_jax/inference/exports.py): ONNX
        # through jax2onnx (it pulls in equinox, orbax-export, netron: about 60 MB
        # of wheels), run in onnxruntime. Tested with jax2onnx 0.17.1, onnx 1.23.2,
        # onnxruntime 1.32.0 (jax 0.10.2).
        # jax2onnx's orbax-export holds orbax-checkpoint below 0.12 (0.11.36 is taken),
        # so the extra is not part of 'test': CI keeps the Orbax release the checkpoint
        # tests run on, and the ONNX tests skip there, naming the extra; the StableHLO
        # export and its README snippet need nothing more and always run, and the
        # PyTorch and LiteRT ones run with the test extra's torch and ai-edge-litert.
        # LiteRT and torch are here too so that this one extra writes every format;
        # `.[litert]` and `.[torch]` write theirs without jax2onnx (and PyPI's default
        # torch is the CUDA build, GBs: install a CPU wheel first where that matters).
        'export': ['jax2onnx>=0.17,<0.18', 'onnx>=1.17', 'onnxruntime>=1.20',
                   'ai-edge-litert>=2.3,<3', 'torch>=2.4'],
        'test': ['pytest>=8', 'torch==2.13.0', 'lpips==0.1.4', 'ai-edge-litert==2.3.0'],
    },
)
