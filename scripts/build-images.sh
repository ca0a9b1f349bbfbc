#!/usr/bin/env bash
# Build Berth's local images (images/<name>/) that are missing or whose recipe changed.
# Usage: scripts/build-images.sh [NAME...]   (default: every kernel image under images/;
# name a test image such as bai-compat to build it too)
# Needs a running dockerd; scripts/setup.sh calls this after starting one.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
. "$BERTH_ROOT/scripts/lib/images.sh"

main() {
    local names=("$@") name
    (( ${#names[@]} )) || mapfile -t names < <(image_names)
    timeout 10 docker info >/dev/null 2>&1 || die "dockerd does not answer; run scripts/setup.sh"
    for name in "${names[@]}"; do
        [[ -f $IMAGES_DIR/$name/recipe.conf ]] || die "no recipe images/$name/recipe.conf"
        run_step "image:$name" build_image "$name"
    done
}

main "$@"
