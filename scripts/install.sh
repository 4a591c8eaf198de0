#!/usr/bin/env bash
# Set up a fresh machine for nasforge (idempotent: safe to run again).
#  1. torch 2.13.0, the CPU build (pinned here only; the package itself accepts a range)
#  2. nasforge itself, editable, with the test tools, Ray (the ray executor), pyarrow
#     (.parquet tables), the dashboard, the loggers, selenium, tokenizers (text) and the
#     COCO evaluation (detection), torchmetrics (segmentation)
#  3. the timeseries extra (aeon --no-deps: see pyproject.toml)
#  4. Fashion-MNIST from Debian's dataset-fashion-mnist package when we are root and apt
#     works; never fatal: without it the default search uses scikit-learn's digits.
#  5. Debian's chromium and chromium-driver the same way (the dashboard's browser test).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PY="${PYTHON:-python3}"
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1

echo "nasforge install: torch (CPU), nasforge[test,ray,tabular,dashboard,tensorboard,mlflow,browser,text,detection,segmentation] and aeon ..."
"$PY" -m pip install -q torch==2.13.0
# ray: the Ray executor and its test (tests/test_executors.py) run in CI too;
# tabular: pyarrow for .parquet tables (tests/test_tabular.py reads one);
# dashboard: nasforge dashboard/report and tests/test_dashboard.py; tensorboard, mlflow:
# the --log-to loggers and tests/test_loggers.py; browser: selenium for the dashboard's
# browser test (.ci/run installs chromium itself); text: Hugging Face tokenizers
# (text data sets, tests/test_text.py)
# text: the newest huggingface_hub (tokenizers' dependency) would upgrade click under
# typer; these are the versions the tests ran with
"$PY" -m pip install -q tokenizers==0.23.3 huggingface_hub==1.16.1 click==8.4.0 typer==0.29.2 \
  torch==2.13.0
"$PY" -m pip install -q -e ".[test,ray,tabular,dashboard,tensorboard,mlflow,browser,text]" torch==2.13.0
# detection extra: the COCO evaluation (mAP) of `--task detection`; pinned to the versions
# the tests ran with
"$PY" -m pip install -q faster-coco-eval==1.8.0 pycocotools==2.0.11 torch==2.13.0
# segmentation extra: torchmetrics' mIoU and Dice
"$PY" -m pip install -q torchmetrics==1.9.0 lightning-utilities==0.15.3 torch==2.13.0
# timeseries extra: aeon's own pins would downgrade numpy and pandas, so its runtime
# dependencies come first (torch pinned) and aeon itself without them
"$PY" -m pip install -q numba Deprecated torch==2.13.0
"$PY" -m pip install -q aeon==1.6.0 --no-deps

fashion_installed() {
  [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] ||
    dpkg -s dataset-fashion-mnist >/dev/null 2>&1
}

if fashion_installed; then
  echo "nasforge install: Fashion-MNIST already installed"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  if timeout 300 apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 ||
    { timeout 300 apt-get update -q >/dev/null 2>&1 &&
      timeout 300 apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; }; then
    echo "nasforge install: Fashion-MNIST installed"
  else
    echo "nasforge install: could not install Fashion-MNIST; the default search uses digits" >&2
  fi
else
  echo "nasforge install: not root or no apt-get; skipping Fashion-MNIST (the default search" \
    "uses digits; or point --data-dir at the IDX files)" >&2
fi
# the dashboard's browser test (tests/test_dashboard_browser.py) drives Debian's headless
# Chromium: installed when missing and we can (never fatal; without it that test is
# skipped, except under CI=true, where it fails)
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    if timeout 600 apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 ||
      { timeout 300 apt-get update -q >/dev/null 2>&1 &&
        timeout 600 apt-get install -y -q chromium chromium-driver >/dev/null 2>&1; }; then
      echo "nasforge install: chromium installed (for the dashboard's browser test)"
    else
      echo "nasforge install: could not install chromium; the browser test will be skipped" >&2
    fi
  fi
fi
echo "nasforge install: done ($("$PY" -c 'import nasforge; print("nasforge", nasforge.__version__)'))"
