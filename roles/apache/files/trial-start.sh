#!/bin/sh
# mxedge.matrix.apache: start a candidate Apache configuration once, in private
# network and PID namespaces, and stop it again.
#
# apache2ctl configtest only parses the configuration. What Apache checks when
# it starts (mod_ssl: certificate and key match, OpenSSL settings) is first
# checked by the next reload, and a graceful reload that fails there stops the
# running Apache. This trial runs Apache's own start-up on the candidate instead:
# its sockets live in a network namespace of their own (no clash with the
# running Apache's ports), its processes in a PID namespace of their own
# (nothing outlives the trial), its pid file, runtime and log files under the
# scratch directory.
#
#   trial-start.sh <scratch>              the candidate tree is <scratch>/conf
#   trial-start.sh <scratch> alongside    the same, for a tree of the operator's
#                                         (matrix_proxy_mode=alongside, run by alongside-test.sh)
#
# Exit status: 0 started fine; 1 Apache refused to start (its messages on
# stderr); 2 no trial possible on this host (namespaces not permitted).
set -u

scratch=$1
conf=$scratch/conf
trial=$scratch/trial

if ! unshare --net --pid --fork true 2>/dev/null; then
    echo "unshare --net --pid is not permitted here; the candidate was only checked with apache2ctl configtest" >&2
    exit 2
fi

mkdir -p "$trial/run" "$trial/log" || exit 2

# The real Listen directives may name addresses that do not exist in an empty
# network namespace; one wildcard socket is enough to start. The role owns
# ports.conf, so this only changes the scratch copy. Alongside the operator's
# Apache, Listen lines are in the operator's files and the role's site too: all
# of them are commented out in the scratch copy (only), and one is added.
if [ "${2:-}" = alongside ]; then
    find "$conf" -type f -name '*.conf' -exec sed -i -E 's/^([[:space:]]*)(Listen[[:space:]])/\1# trial: \2/I' {} + || exit 2
    printf 'Listen 0.0.0.0:443 https\n' >>"$conf/ports.conf" || exit 2
else
    printf 'Listen 0.0.0.0:443 https\n' >"$conf/ports.conf" || exit 2
fi

(
    APACHE_CONFDIR=$conf
    export APACHE_CONFDIR
    # shellcheck disable=SC1091
    . "$conf/envvars"
    APACHE_PID_FILE=$trial/run/apache2.pid
    APACHE_RUN_DIR=$trial/run
    APACHE_LOCK_DIR=$trial/run
    APACHE_LOG_DIR=$trial/log
    export APACHE_PID_FILE APACHE_RUN_DIR APACHE_LOCK_DIR APACHE_LOG_DIR
    exec unshare --net --pid --fork --kill-child \
        /usr/sbin/apache2 -d "$conf" -D FOREGROUND \
        -c "PidFile $APACHE_PID_FILE" -c "ErrorLog $APACHE_LOG_DIR/error.log"
) >"$trial/output" 2>&1 &
pid=$!

# Stop the trial: SIGTERM to the trial's Apache (PID 1 of its namespace, child
# of unshare) for a clean shutdown; if it lingers, SIGKILL to unshare, whose
# --kill-child then takes the whole namespace down.
stop_trial() {
    child=$(pgrep -P "$pid" 2>/dev/null | head -n 1)
    if [ -n "$child" ]; then
        kill -TERM "$child" 2>/dev/null
    fi
    j=0
    while kill -0 "$pid" 2>/dev/null && [ "$j" -lt 100 ]; do
        sleep 0.1
        j=$((j + 1))
    done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
}

# Apache writes its pid file once every module's start-up succeeded.
i=0
while [ "$i" -lt 150 ]; do
    if [ -s "$trial/run/apache2.pid" ]; then
        stop_trial
        exit 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
        wait "$pid"
        echo "Apache did not start with the new configuration (trial start, apache2 -D FOREGROUND):" >&2
        grep -v AH00558 "$trial/output" >&2
        if [ -f "$trial/log/error.log" ]; then
            grep -E '\[[a-z_0-9]*:(emerg|alert|crit|error)\]' "$trial/log/error.log" >&2
        fi
        exit 1
    fi
    sleep 0.1
    i=$((i + 1))
done
stop_trial
echo "Apache did not finish starting with the new configuration within 15 s (trial start)" >&2
exit 1
