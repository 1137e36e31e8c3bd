"""supervisor-control: rotate-secrets' client of supervisord, run as a coprocess.

Usage: python3 -I -S supervisor-control.py CONFIG PROGRAM...

Speaks supervisord's XML-RPC interface over the unix socket that CONFIG's [supervisorctl] serverurl names, like
supervisorctl, without importing supervisor's own modules (pkg_resources alone costs over a second under
emulation). PROGRAM is `group:*`, `group:name`, or `name` (supervisord's short form of `name:name`).

Protocol, one line each way, so the slow part (Python starting) overlaps with the caller's own work:
  1. checks that supervisord answers and knows every PROGRAM, then prints `ready`;
  2. reads a line: `restart` stops every PROGRAM (waiting, as supervisorctl does) and starts it again (waiting
     for each to reach RUNNING), then prints `restarted`; end of input ends it with nothing changed.
Any failure: a message on stderr and exit status 1, without the line the caller waits for.
"""

import configparser
import http.client
import os
import socket
import sys
import xmlrpc.client

# Stopping waits up to a program's stopwaitsecs, starting up to its startsecs times startretries.
CALL_TIMEOUT_SECONDS = 120


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, socket_path):
        super().__init__("localhost", timeout=CALL_TIMEOUT_SECONDS)
        self.socket_path = socket_path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


class UnixTransport(xmlrpc.client.Transport):
    def __init__(self, socket_path):
        super().__init__()
        self.socket_path = socket_path

    def make_connection(self, host):
        return UnixConnection(self.socket_path)


def fail(message):
    print(f"supervisor-control: {message}", file=sys.stderr)
    sys.exit(1)


def socket_path(config_path):
    parser = configparser.RawConfigParser()
    if not parser.read(config_path):
        fail(f"cannot read {config_path}")
    url = parser.get("supervisorctl", "serverurl", fallback="")
    # supervisord's own expansions: %(ENV_X)s for environment variables, %(here)s for the config's directory.
    names = {f"ENV_{key}": value for key, value in os.environ.items()}
    names["here"] = os.path.dirname(os.path.abspath(config_path))
    try:
        url = url % names
    except (KeyError, ValueError) as error:
        fail(f"{config_path}: cannot expand serverurl {url!r} ({error!r} is not set)")
    if not url.startswith("unix://"):
        fail(f"{config_path}: [supervisorctl] serverurl must be unix://PATH, not {url!r}")
    return url[len("unix://") :]


def matches(spec, info):
    group, _, name = spec.partition(":")
    # A bare name is supervisord's short form of name:name, which is also how stopProcess and startProcess read it.
    name = name or group
    return info["group"] == group and (name == "*" or info["name"] == name)


def restart(rpc, specs):
    """supervisorctl restart: every program stopped first, then started; a program that was not running starts."""
    calls = {
        "stop": (rpc.supervisor.stopProcessGroup, rpc.supervisor.stopProcess),
        "start": (rpc.supervisor.startProcessGroup, rpc.supervisor.startProcess),
    }
    for action, (group_call, program_call) in calls.items():
        for spec in specs:
            group, _, name = spec.partition(":")
            try:
                # A group call answers with one result per program; a program call raises on failure.
                if name == "*":
                    results = group_call(group, True)
                else:
                    program_call(spec, True)
                    results = []
            except xmlrpc.client.Fault as fault:
                # NOT_RUNNING (70) on stop and ALREADY_STARTED (60) on start are what a restart wants anyway.
                if (action, fault.faultCode) in (("stop", 70), ("start", 60)):
                    continue
                fail(f"{action} {spec}: {fault.faultString}")
            for result in results:
                if result["status"] != 80:  # SUCCESS
                    fail(f"{action} {result['group']}:{result['name']}: {result['description']}")


def main():
    if len(sys.argv) < 3:
        fail("usage: supervisor-control.py CONFIG PROGRAM...")
    config_path, specs = sys.argv[1], sys.argv[2:]
    rpc = xmlrpc.client.ServerProxy("http://localhost/RPC2", transport=UnixTransport(socket_path(config_path)))
    try:
        processes = rpc.supervisor.getAllProcessInfo()
        unknown = [spec for spec in specs if not any(matches(spec, info) for info in processes)]
        if unknown:
            fail(f"supervisord has no {' '.join(unknown)}")
        print("ready", flush=True)
        if sys.stdin.readline().strip() != "restart":
            return
        restart(rpc, specs)
        print("restarted", flush=True)
    except (OSError, xmlrpc.client.Error, http.client.HTTPException) as error:
        fail(f"cannot talk to supervisord: {error}")


main()
