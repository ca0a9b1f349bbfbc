# shellcheck shell=bash
# Building the local kernel images from images/<name>/ (see images/README.md).
# Sourced after lib/common.sh.

IMAGES_DIR=$BERTH_ROOT/images
BUILD_DIR=$BERTH_STATE_DIR/build
DEB_CACHE=$CACHE_DIR/debs

# The files whose content defines an image; the recipe hash covers all of them.
image_recipe_files() {
    local name=$1
    find "$IMAGES_DIR/$name" -type f | sort
    printf '%s\n' "$BERTH_ROOT/scripts/lib/images.sh"
    # shellcheck disable=SC1090
    if [[ $(. "$IMAGES_DIR/$name/recipe.conf"; echo "$BASE") == busybox ]]; then
        printf '%s\n' /bin/busybox
    fi
}

image_recipe_hash() {
    local files
    mapfile -t files < <(image_recipe_files "$1")
    recipe_hash "${files[@]}"
}

image_current_hash() {
    docker image inspect --format '{{index .Config.Labels "berth.recipe-hash"}}' "$1" 2>/dev/null || true
}

# Root filesystem of a static busybox with a symlink per applet.
rootfs_busybox() {
    local root=$1 applet
    [[ -x /bin/busybox ]] || die "/bin/busybox is missing (apt-get install busybox-static)"
    if ldd /bin/busybox >/dev/null 2>&1; then
        die "/bin/busybox is dynamically linked; the image needs busybox-static"
    fi
    mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,root,home,proc,sys,dev,tmp,var/tmp}
    cp /bin/busybox "$root/bin/busybox"
    while IFS= read -r applet; do
        [[ -e $root/$applet || -L $root/$applet ]] || ln -s /bin/busybox "$root/$applet"
    done < <(/bin/busybox --list-full)
}

# The Debian archive this host's apt uses: the first "deb" source that serves a plain suite
# (not -security/-updates/-backports), from /etc/apt/sources.list.d/*.sources (deb822
# "URIs:") or else /etc/apt/sources.list "deb" lines. Recipes name no mirror: the same
# archive serves every Debian suite, and the image content does not depend on which host
# served the packages, so the mirror is no part of the recipe hash.
# Usage: host_debian_mirror [SOURCES_DIR [SOURCES_LIST]]   (tests name other files)
host_debian_mirror() {
    local dir=${1:-/etc/apt/sources.list.d} list=${2:-/etc/apt/sources.list} uri=
    shopt -s nullglob
    local sources=("$dir"/*.sources)
    shopt -u nullglob
    if (( ${#sources[@]} )); then
        uri=$(awk '
            function flush() {
                if (!found && types ~ /(^| )deb( |$)/ && uris != "" && plain) { print uris; found = 1; exit }
                types = ""; uris = ""; plain = 0
            }
            FNR == 1 { flush() }
            /^[ \t]*#/ { next }
            /^[ \t]*$/ { flush(); next }
            tolower($1) == "types:" { types = $0 }
            tolower($1) == "uris:" { uris = $2 }
            tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i !~ /-/) plain = 1 }
            tolower($1) == "enabled:" && tolower($2) == "no" { types = "" }
            END { flush() }
        ' "${sources[@]}")
    fi
    if [[ -z $uri && -r $list ]]; then
        # deb [options] URI SUITE COMPONENT...
        uri=$(sed -E 's/\[[^]]*\]//' "$list" \
            | awk '$1 == "deb" && $3 !~ /-/ { print $2; exit }')
    fi
    [[ -n $uri ]] || die "no Debian archive found in $dir/*.sources or $list"
    printf '%s\n' "${uri%/}"
}

# Root filesystem of a minimal Debian with PACKAGES, downloaded through a .deb cache.
# The merged-usr hook avoids the usrmerge package (and the perl it drags in); eatmydata and
# unsafe-io skip dpkg's fsyncs, which are most of the build time (rootfs is thrown away on failure).
rootfs_debian() {
    local root=$1 suite=$2 mirror=$3 packages=$4
    command -v mmdebstrap >/dev/null || die "mmdebstrap is missing (apt-get install mmdebstrap)"
    mkdir -p "$DEB_CACHE"
    local opts=(
        --mode=root --variant=essential --format=directory
        --include="${packages// /,}"
        --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
        --hook-dir=/usr/share/mmdebstrap/hooks/eatmydata
        --skip=essential/unlink
        --aptopt='APT::Install-Recommends "false"'
        --dpkgopt='force-unsafe-io'
        --dpkgopt='path-exclude=/usr/share/doc/*'
        --dpkgopt='path-exclude=/usr/share/man/*'
        --dpkgopt='path-exclude=/usr/share/info/*'
        --dpkgopt='path-exclude=/usr/share/locale/*'
        --dpkgopt='path-exclude=/usr/share/lintian/*'
        --setup-hook='mkdir -p "$1"/var/cache/apt/archives/'
        --setup-hook="sync-in $DEB_CACHE /var/cache/apt/archives/"
        --customize-hook="sync-out /var/cache/apt/archives $DEB_CACHE"
    )
    [[ $BERTH_QUIET == 1 ]] && opts+=(--quiet)
    rm -rf "$root"
    mmdebstrap "${opts[@]}" "$suite" "$root" "$mirror" >>"$LOG_DIR/image-build.log" 2>&1 \
        || die "mmdebstrap failed; see $LOG_DIR/image-build.log"
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
        "$root"/var/log/* "$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old
}

# Add the recipe's users: lines "name:uid:gid:home:shell".
rootfs_add_users() {
    local root=$1 users=$2 name uid gid home shell
    touch "$root/etc/passwd" "$root/etc/group"
    while IFS=: read -r name uid gid home shell; do
        [[ -z $name || $name == \#* ]] && continue
        grep -q "^$name:" "$root/etc/passwd" || echo "$name:x:$uid:$gid:$name:$home:$shell" >> "$root/etc/passwd"
        grep -q "^$name:" "$root/etc/group" || echo "$name:x:$gid:" >> "$root/etc/group"
        if [[ $home == /home/* ]]; then
            mkdir -p "$root$home"
            chown "$uid:$gid" "$root$home"
            chmod 0755 "$root$home"
        fi
    done < "$users"
}

rootfs_finish() {
    local root=$1 recipe=$2
    [[ -f $recipe/users ]] && rootfs_add_users "$root" "$recipe/users"
    [[ -d $recipe/rootfs ]] && cp -a --no-preserve=ownership "$recipe/rootfs/." "$root/"
    mkdir -p "$root/tmp"
    chmod 1777 "$root/tmp"
}

# The recipe's import.dockerfile instructions as `-c LINE` arguments, one per line (NUL-separated).
recipe_changes() {
    local recipe=$1 line
    while IFS= read -r line; do
        [[ -z $line || $line == \#* ]] && continue
        printf '%s\0%s\0' -c "$line"
    done < "$recipe/import.dockerfile"
}

# docker import the root filesystem with the recipe's instructions and, when HASH is given,
# the recipe hash label (an intermediate image gets none, so it never passes as built).
rootfs_import() {
    local root=$1 recipe=$2 image=$3 hash=$4
    local changes=()
    mapfile -d '' changes < <(recipe_changes "$recipe")
    [[ -n $hash ]] && changes+=(-c "LABEL berth.recipe-hash=\"$hash\"")
    tar --numeric-owner -C "$root" -c . \
        | docker import "${changes[@]}" - "$image" >>"$LOG_DIR/image-build.log" 2>&1 \
        || die "docker import of $image failed; see $LOG_DIR/image-build.log"
}

# image_pip_install BASE RECIPE IMAGE HASH VENV PYTHON [VENV_OPTS [AFTER_PIP]]: in a container
# of BASE, create VENV with the root's python3 (PYTHON, with `venv` options VENV_OPTS),
# pip-install the recipe's requirements.txt into it and run the shell command AFTER_PIP (as
# root, in that container; e.g. to fix what a wheel cannot express), then commit the container as IMAGE with the recipe's
# instructions again (a commit would otherwise keep the build command as CMD) and the recipe
# hash label. The host's pip configuration (/etc/pip.conf, PIP_*) names local paths that do
# not exist in the container, so pip runs with its defaults, only trusting the host's CA
# bundle (the TLS proxy's CA is in it); those settings are exported inside the build command,
# not given to `docker run -e`, so that the committed image does not carry them.
# pip's cache is $CACHE_DIR/pip (kept across builds: wheels built from sdists, and what the
# index lets pip cache).
image_pip_install() {
    local base=$1 recipe=$2 image=$3 hash=$4 venv=$5 python=$6 venv_opts=${7:-} after=${8:-true}
    local ca=/etc/ssl/certs/ca-certificates.crt cname=berth-image-build-$$
    [[ -r $ca ]] || die "$ca is missing (apt-get install ca-certificates)"
    mkdir -p "$CACHE_DIR/pip"
    local pip_env="PIP_CONFIG_FILE=/dev/null PIP_CERT=/run/berth-host-ca.crt"
    pip_env+=" PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180 PIP_NO_INPUT=1"
    local run=(
        docker run --name "$cname" --network host
        -v "$ca:/run/berth-host-ca.crt:ro"
        -v "$recipe/requirements.txt:/run/berth-requirements.txt:ro"
        -v "$CACHE_DIR/pip:/root/.cache/pip"
        "$base" /bin/sh -ec
        "export $pip_env; $python -m venv $venv_opts $venv
         $venv/bin/pip install -r /run/berth-requirements.txt
         $after"
    )
    if ! "${run[@]}" >>"$LOG_DIR/image-build.log" 2>&1; then
        docker rm -f "$cname" >/dev/null 2>&1 || true
        docker rmi "$base" >/dev/null 2>&1 || true
        die "pip install into $image failed; see $LOG_DIR/image-build.log"
    fi
    local changes=()
    mapfile -d '' changes < <(recipe_changes "$recipe")
    docker commit "${changes[@]}" -c "LABEL berth.recipe-hash=\"$hash\"" "$cname" "$image" \
        >>"$LOG_DIR/image-build.log" 2>&1 || die "docker commit of $image failed; see $LOG_DIR/image-build.log"
    docker rm "$cname" >/dev/null
    docker rmi "$base" >/dev/null
}

# build_image NAME: build images/NAME unless the image with the same recipe hash exists.
# Prints "up to date" or "built" (+ size) through step_result.
build_image() {
    local name=$1 recipe=$IMAGES_DIR/$1 hash mirror
    local IMAGE BASE SUITE PACKAGES TIER=kernel VENV= VENV_OPTS= AFTER_PIP= PYTHON=python3
    # shellcheck disable=SC1091
    . "$recipe/recipe.conf"
    hash=$(image_recipe_hash "$name")
    if [[ $(image_current_hash "$IMAGE") == "$hash" ]]; then
        step_result "$IMAGE up to date"
        return 0
    fi
    local root=$BUILD_DIR/$name
    mkdir -p "$BUILD_DIR" "$LOG_DIR"
    rm -rf "$root"
    case $BASE in
        busybox) rootfs_busybox "$root" ;;
        debian)
            mirror=$(host_debian_mirror) || exit 1
            rootfs_debian "$root" "$SUITE" "$mirror" "$PACKAGES"
            ;;
        *) die "images/$name/recipe.conf: unknown BASE=$BASE" ;;
    esac
    rootfs_finish "$root" "$recipe"
    if [[ -f $recipe/requirements.txt ]]; then
        [[ -n $VENV ]] || die "images/$name/recipe.conf: requirements.txt needs VENV"
        rootfs_import "$root" "$recipe" "$IMAGE-rootfs" ""
        rm -rf "$root"
        image_pip_install "$IMAGE-rootfs" "$recipe" "$IMAGE" "$hash" "$VENV" "$PYTHON" "$VENV_OPTS" \
            "${AFTER_PIP:-true}"
    else
        rootfs_import "$root" "$recipe" "$IMAGE" "$hash"
        rm -rf "$root"
    fi
    # Replaced images are now untagged; drop those (of this and earlier builds) that no
    # container uses any more. Only images carrying our recipe label are touched.
    docker image prune -f --filter label=berth.recipe-hash >/dev/null 2>&1 || true
    step_result "$IMAGE built ($(docker image inspect --format '{{.Size}}' "$IMAGE" | numfmt --to=iec))"
}

# image_names [TIER...]: the recipes whose TIER (default "kernel") is one of TIER...
# ("kernel" when none is given). Kernel images are what the agent runs; "test" images
# (berth/bai-compat) only serve the test suite and are built by setup.sh --test-services.
image_names() {
    local tiers=" ${*:-kernel} " d tier
    for d in "$IMAGES_DIR"/*/; do
        [[ -f $d/recipe.conf ]] || continue
        # shellcheck disable=SC1091
        tier=$(TIER=kernel; . "$d/recipe.conf"; echo "$TIER")
        [[ $tiers == *" $tier "* ]] && basename "$d"
    done
    return 0
}
