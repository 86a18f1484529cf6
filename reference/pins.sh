# Pinned inputs of the reference environment (sourced by build_env.sh).
# shellcheck disable=SC2034
PIP_VERSION=23.3.2
SETUPTOOLS_VERSION=69.0.3
WHEEL_VERSION=0.42.0

MMCV_VERSION=1.7.2
MMCV_SDIST_SHA256=aa276a2c68fa84db9bbcdcf6ae941e30f0cb4a7f175bd283516669e00bab3759
# pip cannot download this sdist without running its setup.py (which imports torch): fetch the file.
MMCV_SDIST_URL=https://files.pythonhosted.org/packages/c9/cc/21ba65de872f57418d8b233c718cddb6f55f86ef1aa399141344887c052c/mmcv-full-1.7.2.tar.gz

# UnravelNet backbone: guue/Unravelnet
UNRAVELNET_COMMIT=99eaa7705ae5bd8ebdc1db021bd3484648580ad1
UNRAVELNET_PATH=mmrotate/models/backbones/unravelnet.py
UNRAVELNET_SHA256=52fba6c64a7c4cb6b48437777971c509bb762dbba34d5bcb818eb681bb893de5

# LEGNet backbone (April 2025 code, LFEA blocks): AeroVILab-AHU/LEGNet
LEGNET_COMMIT=3ddb95ac6bef5798880a58718f2bc8f5764e41ff
LEGNET_PATH=mmrotate/models/backbones/legnet.py
LEGNET_SHA256=b0961b0007292b20e3e8ff1f6458d5a9f3fbf0f3e5dcd6c6b3c9f4bc46dedf5b
