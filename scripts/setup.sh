#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian/Ubuntu machine with Python >= 3.11.
#   scripts/setup.sh          runtime: virtual env in .venv with the app, the model worker's
#                             stack (torch CPU/CUDA wheel) and the account service; the
#                             apt libraries Qt and PortAudio need
#   scripts/setup.sh --test   also the test/bench tools and the apt packages the tests use:
#                             fluidsynth + GM SoundFont (program material), PostgreSQL and
#                             Redis servers (service tests)
# Re-running is cheap: each step is skipped when its stamp matches.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
want_test=0
[ "${1:-}" = "--test" ] && want_test=1

log() { printf '[setup] %s\n' "$*" >&2; }

apt_install() {
    # Installs Debian packages that are missing; needs root or sudo.
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if ! command -v apt-get >/dev/null; then
        log "not a Debian system: please install ${missing[*]} with your package manager"; return 0
    fi
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    log "apt-get install ${missing[*]}"
    $sudo apt-get update -qq >/dev/null || true
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Qt (xcb and offscreen platforms) and PortAudio's shared libraries.
apt_packages=(python3-venv libportaudio2 libegl1 libgl1 libxkbcommon0 libxkbcommon-x11-0
              libfontconfig1 libdbus-1-3 libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1
              libxcb-shape0 libxcb-xinerama0 libxcb-randr0 libxcb-image0 libxcb-render-util0)
[ $want_test -eq 1 ] && apt_packages+=(fluidsynth fluid-soundfont-gm postgresql redis-server curl)
apt_install "${apt_packages[@]}"

py="${PYTHON:-python3}"
"$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
    || { log "Python >= 3.11 is required (found $("$py" --version 2>&1))"; exit 1; }

if [ ! -x .venv/bin/python ]; then
    log "creating .venv"
    "$py" -m venv .venv
fi

extra="[models,service]"
[ $want_test -eq 1 ] && extra="[models,service,dev]"
stamp=".venv/.amc-installed${extra}"
digest="$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$digest" ]; then
    log "installing the app${extra} into .venv (first run takes a minute)"
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null
    .venv/bin/python -m pip install -q -e ".${extra}"
    # Basic Pitch (audio -> MIDI, ONNX model inside the wheel): its runtime deps come
    # from the models extra; its own metadata would pull TensorFlow, hence --no-deps.
    .venv/bin/python -m pip install -q --no-deps "basic-pitch==0.4.0"
    echo "$digest" > "$stamp"
fi
