#!/bin/sh
# Runs inside the kernel VM (crates/rollcall/tests/kernel_vm.rs boots it):
# the real `rollcall agent` with `chip = "auto"` on a gpio-sim chip labelled
# like a Raspberry Pi 4's, its embedded broker on the VM's own loopback, and
# the GPIO service configured, driven, read and reconfigured over MQTT with
# mosquitto_pub/mosquitto_sub (the host's /usr is mounted read-only).
# Prints PASS:/FAIL: lines; the exit status is the number of failures.
# Nothing here reaches the host's network: the VM has only its loopback.

export PATH=/bin:/usr/bin:/usr/sbin   # busybox first, then the host's tools
fails=0
pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
# until TRIES CMD...: CMD until it succeeds, 20 times a second, at most TRIES times.
until_ok() { n=$1; shift; while [ "$n" -gt 0 ]; do "$@" && return 0; sleep 0.05; n=$((n - 1)); done; return 1; }

HOST=pivm
PORT=1883   # the VM's own loopback: nothing else listens there
hostname $HOST

modprobe gpio-sim || { fail "modprobe gpio-sim"; exit 1; }
G=/sys/kernel/config/gpio-sim/pi4
mkdir $G $G/bank0
echo 58 > $G/bank0/num_lines
echo pinctrl-bcm2711 > $G/bank0/label
echo 1 > $G/live || { fail "gpio-sim chip"; exit 1; }
SIM=/sys/devices/platform/$(cat $G/dev_name)/$(cat $G/bank0/chip_name)
level() { cat $SIM/sim_gpio$1/value; }
is_level() { [ "$(level $1)" = "$2" ]; }
echo pull-down > $SIM/sim_gpio22/pull

cat > /tmp/agent.toml <<TOML
broker = "mqtt://127.0.0.1:$PORT"
embedded_broker = "127.0.0.1:$PORT"
udp_bind = "127.0.0.1"
state_dir = "/tmp/rollcall-state"
[services.system]
enabled = false
[services.gpio]
enabled = true
chip = "auto"
TOML
/host/rollcall agent --config /tmp/agent.toml > /tmp/agent.log 2>&1 &
AGENT=$!

sub() { mosquitto_sub -h 127.0.0.1 -p $PORT -W 20 "$@"; }
pub() { mosquitto_pub -h 127.0.0.1 -p $PORT -q 1 "$@"; }
# The embedded broker listens once the agent has started it.
until_ok 600 mosquitto_pub -h 127.0.0.1 -p $PORT -t /probe -n 2>/dev/null ||
    { fail "the agent's broker never listened"; cat /tmp/agent.log; exit 1; }

state=$(sub -t "/$HOST/\$state" -C 1)
case "$state" in online*) pass "agent online ($state)";; *) fail "agent not online: '$state'"; cat /tmp/agent.log; exit 1;; esac

desc=$(sub -t "/$HOST/gpio/\$description" -C 1)
case "$desc" in *gpio*) pass "gpio service found the chip labelled pinctrl-bcm2711";; *) fail "no gpio description: $desc";; esac

# Configure: one output, one input reporting on change.
pub -t "/$HOST/gpio/control" -m '{"outputs":[{"name":"lamp","pin":23,"init":1}],"inputs":[{"name":"button","pin":22,"report":"change","debounce_ms":0}]}'
until_ok 200 is_level 23 1 && pass "output lamp configured high on line 23" || fail "line 23 not high: $(level 23)"
sub -t "/$HOST/gpio/output/lamp" -C 1 | grep -q '"value":1' && pass "lamp's retained value is 1" || fail "lamp's value"

# Drive it over MQTT.
pub -t "/$HOST/gpio/set/lamp" -m off
until_ok 200 is_level 23 0 && pass "set lamp off drives line 23 low" || fail "line 23 still $(level 23)"

# An input edge from the outside reaches MQTT.
sub -t "/$HOST/gpio/input/button" -C 2 > /tmp/button.out &
SUB=$!
until_ok 200 grep -q '"value":0' /tmp/button.out || fail "button's first value"
echo pull-up > $SIM/sim_gpio22/pull
wait $SUB
grep -q '"value":1' /tmp/button.out && pass "a rising edge on line 22 is published" || fail "no rising edge: $(cat /tmp/button.out)"

# Reconfigure without a restart: 23 becomes an input pulled up, the lamp
# moves to 24.
pub -t "/$HOST/gpio/control" -m '{"outputs":[{"name":"lamp","pin":24,"init":1}],"inputs":[{"name":"door","pin":23,"pull":"up","report":"change"}]}'
until_ok 200 is_level 24 1 && pass "lamp moved to line 24, high" || fail "line 24: $(level 24)"
sub -t "/$HOST/gpio/input/door" -C 1 | grep -q '"value":1' && pass "line 23 is now an input, pulled up by the agent's request" || fail "door's value"
[ "$(cat $SIM/sim_gpio23/pull)" = pull-up ] && pass "the kernel applied the pull-up" || fail "pull on 23: $(cat $SIM/sim_gpio23/pull)"
kill -0 $AGENT 2>/dev/null && pass "same agent process throughout" || fail "the agent exited"

# SIGTERM stops the agent cleanly (exit status 0).
kill $AGENT
wait $AGENT
rc=$?
[ $rc = 0 ] && pass "agent stopped cleanly on SIGTERM" || fail "agent exit status $rc"
echo "--- agent log"
cat /tmp/agent.log
echo "=== $fails failure(s)"
exit $fails
