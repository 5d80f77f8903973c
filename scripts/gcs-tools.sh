# Sourced by scripts/services.sh: what the GCS storage tests need, from PyPI, into the
# project's venv (./.venv, else ~/.cache/asset-metadata/venv as for moto):
#   google-cloud-storage   Google's reference V4 signer: tests/gcs/golden.py makes golden
#                          URLs with it, offline, for a key the test generates
#   gcp-storage-emulator   a GCS server for the download plumbing (it checks no
#                          signature; tests start their own instance on a free port)
# No Docker and no Go toolchain here, so fake-gcs-server is not an option. Idempotent.

GCS_PYPI_PACKAGES=(google-cloud-storage==3.17.1 gcp-storage-emulator==2026.7.19)

gcs_venv() {
  local venv
  for venv in ./.venv "$HOME/.cache/asset-metadata/venv"; do
    [ -x "$venv/bin/python" ] && { echo "$venv"; return 0; }
  done
  venv=./.venv
  [ -w . ] || venv="$HOME/.cache/asset-metadata/venv"
  python3 -m venv "$venv" >&2 || return 1
  echo "$venv"
}

ensure_gcs_tools() {
  local venv
  venv="$(gcs_venv)" || return 1
  "$venv/bin/python" -c 'import google.cloud.storage, gcp_storage_emulator' 2>/dev/null && return 0
  echo "services: installing ${GCS_PYPI_PACKAGES[*]} into $venv" >&2
  "$venv/bin/pip" install -q "${GCS_PYPI_PACKAGES[@]}" >&2
}
