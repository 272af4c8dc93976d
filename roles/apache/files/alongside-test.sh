#!/bin/sh
# mxedge.matrix.apache (matrix_proxy_mode=alongside): test a candidate tree as if
# it were /etc/apache2.
#
# The operator's configuration may name files by absolute paths under
# /etc/apache2 (and the website's Include line names the role's snippet so), so
# APACHE_CONFDIR alone would mix the candidate with live files. In a mount
# namespace of its own the scratch copy is bind-mounted over /etc/apache2 (and
# each edited file outside it over the live one); there, apache2ctl configtest
# and then the trial start (trial-start.sh) see exactly the candidate. Nothing
# outside the namespace changes; the mounts end with it.
#
#   alongside-test.sh <scratch> <confdir> [<live file> <candidate file>]...
#
# Exit status: 0 accepted; 1 Apache refused it (its messages on stderr);
# 2 namespaces not permitted here (nothing was tested).
set -u

if ! unshare --mount --propagation private true 2>/dev/null; then
    echo "unshare --mount is not permitted here: the candidate could not be tested" >&2
    exit 2
fi

# shellcheck disable=SC2016 # the script's $1.. are the inner shell's, expanded there
exec unshare --mount --propagation private sh -c '
    set -u
    scratch=$1
    confdir=$2
    shift 2
    mount --bind "$scratch/conf" "$confdir" || exit 2
    while [ "$#" -ge 2 ]; do
        mount --bind "$2" "$1" || exit 2
        shift 2
    done
    if ! out=$(APACHE_CONFDIR=$confdir apache2ctl configtest 2>&1); then
        printf "%s\n" "$out" | grep -v AH00558 >&2
        exit 1
    fi
    sh "$scratch/trial-start.sh" "$scratch" alongside
    rc=$?
    # no namespaces for the trial start: configtest alone passed
    [ "$rc" -eq 2 ] && exit 0
    exit "$rc"
' sh "$@"
