"""kube-proxy's data path, built for real in network namespaces (issue #20's tests).

A KubeProxyNet is a node with pods and an outside world, each a network namespace of its own:

  ext (192.0.2.2, 2001:db8::2)  --veth--  node  --veth-- cli  (client pod)
                                           |   --veth-- be1 (backend pod 1)
                                           |   --veth-- be2 (backend pod 2)

The node forwards IPv4 and IPv6 and holds the Services' NAT rules, written the way kube-proxy
writes them, in one of two modes:
  "iptables"  iptables-nft-restore / ip6tables-nft-restore of a nat table with kube-proxy's
              chains: KUBE-SERVICES, KUBE-NODEPORTS, KUBE-EXT-<hash>, KUBE-SVC-<hash> (the
              endpoints picked by `-m statistic --mode random --probability`), KUBE-SEP-<hash>
              (hairpin: `-s <endpoint> -j KUBE-MARK-MASQ`, then DNAT), KUBE-MARK-MASQ and
              KUBE-POSTROUTING (MASQUERADE of what carries mark 0x4000);
  "nftables"  `nft -f` of kube-proxy's nftables mode: table ip/ip6 "kube-proxy" with the
              service-ips and service-nodeports verdict maps, per-service chains that pick an
              endpoint chain with `numgen random mod N vmap`, endpoint chains that mark
              hairpin traffic and dnat, and masquerading of what mark-for-masquerade marked;
  None        no rules at all (no NAT: pods reach each other by their own addresses).
Chain names carry kube-proxy's own hashes (base32 of SHA-256), so a listing reads like a real
node's.

Addresses (the same in every instance: each instance's namespaces are its own):
  node's pod-side gateway  10.244.1.1 on every pod veth       fe80::1 on every pod veth
  client pod               10.244.1.2                         fd00:10:244::2
  backend pod 1, 2         10.244.1.11, 10.244.1.12           fd00:10:244::11, ::12
  services                 10.96.0.0/16 (cluster IPs)         fd00:10:96::/112
  node <-> ext link        192.0.2.1 (node) / 192.0.2.2       2001:db8::1 / 2001:db8::2
Pods' addresses are /32 and /128 with a route to the node's gateway on eth0, as the ptp CNI
plugin does; the node routes each pod's address to the pod's veth.

Namespaces are named nmnat-<pytest pid>-<seq>-<role>, so concurrent or repeated runs never
collide; leftovers of runs whose pytest is gone are removed by clean_leftovers(). Everything is
removed by cleanup(), also after a failed create().

Conntrack truth: conntrack_entries() runs conntrack-tools' `conntrack -L` in the node's
namespace and parses each entry's original and reply tuples.
"""

import base64
import contextlib
import ctypes
import hashlib
import ipaddress
import os
import re
import shutil
import subprocess
import threading
import time

NETNS_PREFIX = "nmnat-"
LEFTOVER = re.compile(r"nmnat-(\d+)-\d+-\w+")
COMMAND_TIMEOUT = 30  # seconds for any one ip/nft/iptables/conntrack command
CLONE_NEWNET = 0x40000000

MASQ_MARK = "0x4000"
CLUSTER_CIDR = {"ipv4": "10.244.0.0/16", "ipv6": "fd00:10:244::/64"}
SERVICE_CIDR = {"ipv4": "10.96.0.0/16", "ipv6": "fd00:10:96::/112"}
GATEWAY = {"ipv4": "10.244.1.1", "ipv6": "fe80::1"}
NODE_IP = {"ipv4": "192.0.2.1", "ipv6": "2001:db8::1"}
EXTERNAL_IP = {"ipv4": "192.0.2.2", "ipv6": "2001:db8::2"}
POD_IPS = {
    "cli": {"ipv4": "10.244.1.2", "ipv6": "fd00:10:244::2"},
    "be1": {"ipv4": "10.244.1.11", "ipv6": "fd00:10:244::11"},
    "be2": {"ipv4": "10.244.1.12", "ipv6": "fd00:10:244::12"},
}
FAMILIES = ("ipv4", "ipv6")
MODES = ("iptables", "nftables")
TOOLS = {"ip": "iproute2", "nft": "nftables", "iptables-nft-restore": "iptables",
         "ip6tables-nft-restore": "iptables", "iptables-nft-save": "iptables",
         "ip6tables-nft-save": "iptables", "conntrack": "conntrack",
         "nsenter": "util-linux"}


def missing_tools():
    """The tools this module runs that are not installed, as 'tool (package)' strings."""
    return [f"{tool} ({package})" for tool, package in TOOLS.items() if not shutil.which(tool)]


def canonical(address):
    """An address as the agent writes it (inet_ntop: IPv6 compressed, lower case)."""
    return ipaddress.ip_address(address).compressed


def family_of(address):
    return "ipv6" if ":" in address else "ipv4"


def run(argv, input_text=None, check=True):
    """Runs `argv` (bounded); raises AssertionError with its stderr when it fails."""
    result = subprocess.run(argv, input=input_text, capture_output=True, text=True,
                            timeout=COMMAND_TIMEOUT)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({result.returncode}): "
                             f"{result.stderr.strip() or result.stdout.strip()}")
    return result


# ---------------------------------------------------------------------------------------------
# Network namespaces


def netns_list():
    out = run(["ip", "netns", "list"]).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def pid_alive(pid):
    return os.path.exists(f"/proc/{pid}")


def clean_leftovers():
    """Deletes the namespaces of earlier runs whose pytest process is gone (their nft tables
    and iptables rules go with them)."""
    for name in netns_list():
        m = LEFTOVER.fullmatch(name)
        if m and not pid_alive(int(m.group(1))):
            run(["ip", "netns", "delete", name], check=False)


def call_in_netns(netns, function, *args):
    """Calls function(*args) in a thread of its own that has joined network namespace `netns`
    (setns(2) changes only the calling thread's), and returns its result. Sockets created there
    stay in that namespace: a server started this way listens in it."""
    result = {}

    def target():
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(f"/run/netns/{netns}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                result["error"] = OSError(err, f"setns({netns}): {os.strerror(err)}")
                return
        finally:
            os.close(fd)
        try:
            result["value"] = function(*args)
        except BaseException as e:  # handed to the caller
            result["error"] = e

    thread = threading.Thread(target=target, name=f"in-{netns}", daemon=True)
    thread.start()
    thread.join(COMMAND_TIMEOUT * 2)
    if thread.is_alive():
        raise AssertionError(f"{function!r} in {netns} did not return in {COMMAND_TIMEOUT * 2} s")
    if "error" in result:
        raise result["error"]
    return result.get("value")


# ---------------------------------------------------------------------------------------------
# kube-proxy's names


def _hash(text, length):
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:length]


def chain_svc(port_name):
    """KUBE-SVC-<hash> of "ns/name:port" (kube-proxy's servicePortChainName)."""
    return "KUBE-SVC-" + _hash(port_name + "tcp", 16)


def chain_ext(port_name):
    return "KUBE-EXT-" + _hash(port_name + "tcp", 16)


def chain_sep(port_name, endpoint):
    """KUBE-SEP-<hash> of the service port and "ip:port" (servicePortEndpointChainName)."""
    return "KUBE-SEP-" + _hash(port_name + "tcp" + endpoint, 16)


def nft_chain(prefix, base):
    """kube-proxy's nftables chain names: <prefix>-<8 of base32(sha256(base))>-<base>."""
    return f"{prefix}-{_hash(base, 8)}-{base}"


def endpoint_text(address, port):
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


# ---------------------------------------------------------------------------------------------
# Services


class Service:
    """A Service port with cluster IPs (one per family), an optional node port, and endpoints:
    (role of the backend pod, target port) pairs."""

    def __init__(self, namespace, name, port_name, port, vips, endpoints, node_port=None):
        self.namespace = namespace
        self.name = name
        self.port_name = port_name
        self.port = port
        self.vips = {f: canonical(a) for f, a in vips.items()}
        self.endpoints = list(endpoints)
        self.node_port = node_port

    @property
    def key(self):
        return f"{self.namespace}/{self.name}:{self.port_name}"

    def endpoint_addrs(self, family):
        return [(canonical(POD_IPS[role][family]), port) for role, port in self.endpoints]


# ---------------------------------------------------------------------------------------------
# The rules


def iptables_rules(services, family):
    """The nat table kube-proxy's iptables mode writes for `services` (iptables-restore input)."""
    cidr = CLUSTER_CIDR[family]
    chains = ["KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ"]
    rules = [
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" '
        '-j KUBE-POSTROUTING',
        f"-A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN",
        f"-A KUBE-POSTROUTING -j MARK --xor-mark {MASQ_MARK}",
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" '
        "-j MASQUERADE --random-fully",
        f"-A KUBE-MARK-MASQ -j MARK --or-mark {MASQ_MARK}",
    ]
    for svc in services:
        key, svc_chain, ext_chain = svc.key, chain_svc(svc.key), chain_ext(svc.key)
        vip = svc.vips[family]
        chains.append(svc_chain)
        rules.append(f'-A KUBE-SERVICES -m comment --comment "{key} cluster IP" -m tcp -p tcp '
                     f"-d {vip} --dport {svc.port} -j {svc_chain}")
        if svc.node_port:
            chains.append(ext_chain)
            rules.append(f"-A KUBE-NODEPORTS -m comment --comment {key} -m tcp -p tcp "
                         f"--dport {svc.node_port} -j {ext_chain}")
            rules.append(f'-A {ext_chain} -m comment --comment "masquerade traffic for {key} '
                         f'external destinations" -j KUBE-MARK-MASQ')
            rules.append(f"-A {ext_chain} -j {svc_chain}")
        rules.append(f'-A {svc_chain} -m comment --comment "{key} cluster IP" -m tcp -p tcp '
                     f"-d {vip} --dport {svc.port} ! -s {cidr} -j KUBE-MARK-MASQ")
        endpoints = svc.endpoint_addrs(family)
        for i, (address, port) in enumerate(endpoints):
            target = endpoint_text(address, port)
            sep = chain_sep(key, target)
            chains.append(sep)
            left = len(endpoints) - i
            statistic = ("" if left == 1 else
                         f"-m statistic --mode random --probability {1.0 / left:.10f} ")
            rules.append(f'-A {svc_chain} -m comment --comment "{key} -> {target}" '
                         f"{statistic}-j {sep}")
            rules.append(f"-A {sep} -m comment --comment {key} -s {address} -j KUBE-MARK-MASQ")
            rules.append(f"-A {sep} -m comment --comment {key} -m tcp -p tcp -j DNAT "
                         f"--to-destination {target}")
    # The node-ports jump is the last rule of KUBE-SERVICES, as kube-proxy writes it.
    rules.append('-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: '
                 'this must be the last rule in this chain" -m addrtype --dst-type LOCAL '
                 "-j KUBE-NODEPORTS")
    return "\n".join(["*nat", *(f":{c} - [0:0]" for c in chains), *rules, "COMMIT", ""])


def nftables_rules(services, family):
    """Table ip/ip6 "kube-proxy" as kube-proxy's nftables mode writes it (the NAT part: its
    filter chains only reject and drop what has no endpoints, which these tests never send)."""
    table = "ip" if family == "ipv4" else "ip6"
    addr_type = "ipv4_addr" if family == "ipv4" else "ipv6_addr"
    ip = "ip" if family == "ipv4" else "ip6"
    t = f"{table} kube-proxy"
    lines = [
        f'add table {t} {{ comment "rules for kube-proxy" ; }}',
        f'add set {t} cluster-ips {{ type {addr_type} ; comment "Active ClusterIPs" ; }}',
        f'add set {t} nodeport-ips {{ type {addr_type} ; '
        f'comment "IPs that accept NodePort traffic" ; }}',
        f"add map {t} service-ips {{ type {addr_type} . inet_proto . inet_service : verdict ; "
        f'comment "ClusterIP, ExternalIP and LoadBalancer IP traffic" ; }}',
        f"add map {t} service-nodeports {{ type inet_proto . inet_service : verdict ; "
        f'comment "NodePort traffic" ; }}',
        f"add chain {t} mark-for-masquerade",
        f"add chain {t} masquerading",
        f"add chain {t} services",
        f"add chain {t} nat-output {{ type nat hook output priority -100 ; }}",
        f"add chain {t} nat-postrouting {{ type nat hook postrouting priority 100 ; }}",
        f"add chain {t} nat-prerouting {{ type nat hook prerouting priority -100 ; }}",
        f"add rule {t} mark-for-masquerade mark set mark or {MASQ_MARK}",
        f"add rule {t} masquerading mark and {MASQ_MARK} == 0 return",
        f"add rule {t} masquerading mark set mark xor {MASQ_MARK}",
        f"add rule {t} masquerading masquerade fully-random",
        f"add rule {t} nat-output jump services",
        f"add rule {t} nat-postrouting jump masquerading",
        f"add rule {t} nat-prerouting jump services",
        f"add rule {t} services {ip} daddr . meta l4proto . th dport vmap @service-ips",
        f"add rule {t} services {ip} daddr @nodeport-ips meta l4proto . th dport "
        f"vmap @service-nodeports",
        f"add element {t} nodeport-ips {{ {NODE_IP[family]} }}",
    ]
    cidr = CLUSTER_CIDR[family]
    for svc in services:
        base = f"{svc.namespace}/{svc.name}/tcp/{svc.port_name}"
        service_chain = nft_chain("service", base)
        external_chain = nft_chain("external", base)
        vip = svc.vips[family]
        endpoints = svc.endpoint_addrs(family)
        # IPv6 colons are not allowed in a chain name: kube-proxy writes them as dots.
        endpoint_chains = [nft_chain("endpoint", f"{base}__{a.replace(':', '.')}/{p}")
                           for a, p in endpoints]
        # Chains exist before the rules that jump to them (kube-proxy adds every chain first).
        lines += [f"add chain {t} {c}" for c in [service_chain, *endpoint_chains]]
        lines += [
            f"add rule {t} {service_chain} {ip} daddr {vip} tcp dport {svc.port} "
            f"{ip} saddr != {cidr} jump mark-for-masquerade",
            f"add rule {t} {service_chain} numgen random mod {len(endpoints)} vmap {{ "
            + " , ".join(f"{i} : goto {c}" for i, c in enumerate(endpoint_chains)) + " }",
        ]
        for chain, (address, port) in zip(endpoint_chains, endpoints):
            lines += [
                f"add rule {t} {chain} {ip} saddr {address} jump mark-for-masquerade",
                f"add rule {t} {chain} meta l4proto tcp dnat to {endpoint_text(address, port)}",
            ]
        lines += [
            f"add element {t} cluster-ips {{ {vip} }}",
            f"add element {t} service-ips {{ {vip} . tcp . {svc.port} : goto {service_chain} }}",
        ]
        if svc.node_port:
            lines += [
                f"add chain {t} {external_chain}",
                f"add rule {t} {external_chain} jump mark-for-masquerade",
                f"add rule {t} {external_chain} goto {service_chain}",
                f"add element {t} service-nodeports {{ tcp . {svc.node_port} : "
                f"goto {external_chain} }}",
            ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Conntrack


class ConntrackEntry:
    """One `conntrack -L -o extended` line: the original and reply tuples (addresses
    canonical), the state and the flags in brackets."""

    def __init__(self, line, orig, reply, state, flags, zone):
        self.line = line
        self.orig = orig  # (src, sport, dst, dport)
        self.reply = reply
        self.state = state
        self.flags = flags
        self.zone = zone

    def __repr__(self):
        return f"ConntrackEntry({self.line!r})"

    @property
    def dnat(self):
        """True when the reply comes from another address or port than the original dialed."""
        return (self.reply[0], self.reply[1]) != (self.orig[2], self.orig[3])

    @property
    def snat(self):
        """True when the reply goes to another address or port than the original came from."""
        return (self.reply[2], self.reply[3]) != (self.orig[0], self.orig[1])


_TUPLE_KEYS = ("src", "sport", "dst", "dport")


def parse_conntrack(text):
    """Entries of `conntrack -L -p tcp -o extended` output (other protocols are skipped), or of
    `conntrack -E` output without its leading event tag ("[NEW]", "[DESTROY]", ...)."""
    entries = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 6 or fields[2] != "tcp":
            continue
        values = {k: [] for k in _TUPLE_KEYS}
        flags = re.findall(r"\[(\w+)\]", line)
        zone = 0
        for field in fields:
            key, sep, value = field.partition("=")
            if sep and key in values:
                values[key].append(value)
            elif sep and key == "zone":
                zone = int(value)
        if any(len(values[k]) != 2 for k in _TUPLE_KEYS):
            raise AssertionError(f"conntrack printed a line without two tuples: {line!r}")
        orig = (canonical(values["src"][0]), int(values["sport"][0]),
                canonical(values["dst"][0]), int(values["dport"][0]))
        reply = (canonical(values["src"][1]), int(values["sport"][1]),
                 canonical(values["dst"][1]), int(values["dport"][1]))
        entries.append(ConntrackEntry(line, orig, reply, fields[5], flags, zone))
    return entries


class ConntrackEvents:
    """`conntrack -E -p tcp -o extended` (conntrack-tools' event mode) in a namespace, its lines
    collected by a thread: the truth for entries the kernel deletes at once, such as a refused
    connection's (an unassured entry is destroyed on the reset, so `conntrack -L` never shows
    it). A context manager; on entering, it returns once the subscription shows events."""

    READY_TIMEOUT = 10.0  # seconds for the subscription to show a probe connection

    def __init__(self, net, probe_from="cli"):
        self.net = net
        self.probe_from = probe_from
        self.proc = None
        self._lock = threading.Lock()
        self._events = []  # (tag, ConntrackEntry)

    def _read(self):
        for line in self.proc.stdout:
            m = re.match(r"\s*\[(\w+)\]\s+(.*)", line)
            if not m:
                continue
            entries = parse_conntrack(m.group(2))
            with self._lock:
                self._events += [(m.group(1), e) for e in entries]

    def __enter__(self):
        self.proc = subprocess.Popen(
            self.net.command("node", ["conntrack", "-E", "-p", "tcp", "-o", "extended"]),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self._read, name="conntrack-events", daemon=True).start()
        try:
            self._wait_ready()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _wait_ready(self):
        """Connects from the probe pod to a closed port of the node (refused, but tracked) until
        the subscription shows that connection: from then on it misses nothing."""
        gateway = GATEWAY["ipv4"]
        deadline = time.monotonic() + self.READY_TIMEOUT
        while time.monotonic() < deadline:
            run(self.net.command(self.probe_from, ["nc", "-z", "-w", "1", gateway, "9"]),
                check=False)
            if self.wait(lambda e: e.orig[2] == gateway and e.orig[3] == 9, timeout=0.2):
                return
        raise AssertionError(f"conntrack -E in {self.net.ns['node']} showed no event within "
                             f"{self.READY_TIMEOUT} s")

    def wait(self, predicate, tag="NEW", timeout=5.0):
        """The first entry of a `tag` event that `predicate` accepts, waiting up to `timeout`
        seconds; None when none came."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                found = [e for t, e in self._events if t == tag and predicate(e)]
            if found or time.monotonic() >= deadline:
                return found[0] if found else None
            time.sleep(0.02)

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


# ---------------------------------------------------------------------------------------------
# The topology


class KubeProxyNet:
    """The node, its pods and the outside, with `services` translated in `mode` (see the module
    docstring). Use as a context manager (or create()/cleanup())."""

    _seq = 0
    ROLES = ("node", "cli", "be1", "be2", "ext")

    def __init__(self, mode, services):
        assert mode in MODES or mode is None, mode
        KubeProxyNet._seq += 1
        self.mode = mode
        self.services = list(services)
        self.tag = f"{os.getpid()}-{KubeProxyNet._seq}"
        self.ns = {role: f"{NETNS_PREFIX}{self.tag}-{role}" for role in self.ROLES}
        self.created = []

    # -- building

    def __enter__(self):
        try:
            self.create()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(self, *exc):
        self.cleanup()

    def ip(self, role, *args):
        return run(["ip", "-n", self.ns[role], *args])

    def sysctl(self, role, *settings):
        run(["ip", "netns", "exec", self.ns[role], "sysctl", "-qw", *settings])

    def create(self):
        for role in self.ROLES:
            run(["ip", "netns", "add", self.ns[role]])
            self.created.append(self.ns[role])
            # No duplicate address detection: addresses are usable at once.
            self.sysctl(role, "net.ipv6.conf.all.accept_dad=0",
                        "net.ipv6.conf.default.accept_dad=0")
            self.ip(role, "link", "set", "lo", "up")
        self.sysctl("node", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
        for role in ("cli", "be1", "be2"):
            self._add_pod(role)
        self._add_external()
        self.apply_rules()

    def _add_pod(self, pod):
        """veth v<pod> (node) -- eth0 (pod), the ptp CNI plugin's way."""
        host = f"v{pod}"
        self.ip("node", "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns",
                self.ns[pod])
        self.ip("node", "addr", "add", f"{GATEWAY['ipv4']}/32", "dev", host)
        self.ip("node", "-6", "addr", "add", f"{GATEWAY['ipv6']}/64", "dev", host, "nodad")
        self.ip("node", "link", "set", host, "up")
        self.ip(pod, "addr", "add", f"{POD_IPS[pod]['ipv4']}/32", "dev", "eth0")
        self.ip(pod, "-6", "addr", "add", f"{POD_IPS[pod]['ipv6']}/128", "dev", "eth0", "nodad")
        self.ip(pod, "link", "set", "eth0", "up")
        self.ip(pod, "route", "add", GATEWAY["ipv4"], "dev", "eth0", "scope", "link")
        self.ip(pod, "route", "add", "default", "via", GATEWAY["ipv4"], "dev", "eth0")
        self.ip(pod, "-6", "route", "add", "default", "via", GATEWAY["ipv6"], "dev", "eth0")
        self.ip("node", "route", "add", f"{POD_IPS[pod]['ipv4']}/32", "dev", host)
        self.ip("node", "-6", "route", "add", f"{POD_IPS[pod]['ipv6']}/128", "dev", host)

    def _add_external(self):
        """veth vext (node, 192.0.2.1, 2001:db8::1) -- eth0 (ext); the outside routes the pod
        and service networks to the node, as a router in front of it would."""
        self.ip("node", "link", "add", "vext", "type", "veth", "peer", "name", "eth0", "netns",
                self.ns["ext"])
        self.ip("node", "addr", "add", f"{NODE_IP['ipv4']}/24", "dev", "vext")
        self.ip("node", "-6", "addr", "add", f"{NODE_IP['ipv6']}/64", "dev", "vext", "nodad")
        self.ip("node", "link", "set", "vext", "up")
        self.ip("ext", "addr", "add", f"{EXTERNAL_IP['ipv4']}/24", "dev", "eth0")
        self.ip("ext", "-6", "addr", "add", f"{EXTERNAL_IP['ipv6']}/64", "dev", "eth0", "nodad")
        self.ip("ext", "link", "set", "eth0", "up")
        self.ip("node", "route", "add", "default", "via", EXTERNAL_IP["ipv4"])
        self.ip("node", "-6", "route", "add", "default", "via", EXTERNAL_IP["ipv6"])

    def apply_rules(self):
        """Writes the Services' rules of this mode into the node's namespace."""
        if self.mode == "iptables":
            for family, tool in (("ipv4", "iptables-nft-restore"),
                                 ("ipv6", "ip6tables-nft-restore")):
                run(["ip", "netns", "exec", self.ns["node"], tool, "--noflush"],
                    input_text=iptables_rules(self.services, family))
        elif self.mode == "nftables":
            script = "".join(nftables_rules(self.services, f) for f in FAMILIES)
            run(["ip", "netns", "exec", self.ns["node"], "nft", "-f", "-"], input_text=script)

    def flush_rules(self):
        """Removes every NAT rule of the node (kube-proxy gone): no translation from now on."""
        if self.mode == "iptables":
            for tool in ("iptables-nft", "ip6tables-nft"):
                run(["ip", "netns", "exec", self.ns["node"], tool, "-t", "nat", "-F"])
                run(["ip", "netns", "exec", self.ns["node"], tool, "-t", "nat", "-X"])
        elif self.mode == "nftables":
            run(["ip", "netns", "exec", self.ns["node"], "nft", "flush", "ruleset"])

    def ruleset(self):
        """The node's rules as the mode's own tool lists them: iptables-nft-save and
        ip6tables-nft-save of the nat table, or `nft list ruleset`."""
        if self.mode == "iptables":
            return "".join(
                run(["ip", "netns", "exec", self.ns["node"], tool, "-t", "nat"]).stdout
                for tool in ("iptables-nft-save", "ip6tables-nft-save"))
        return run(["ip", "netns", "exec", self.ns["node"], "nft", "list", "ruleset"]).stdout

    def cleanup(self):
        """Deletes every namespace this instance made (their links, rules and conntrack entries
        go with them). Raises when one is left."""
        for name in self.created:
            run(["ip", "netns", "delete", name], check=False)
        left = [n for n in self.created if n in netns_list()]
        self.created = left
        assert not left, f"network namespaces left behind: {left}"

    # -- using it

    def command(self, role, argv):
        """argv run in `role`'s namespace (`ip netns exec` execs it: the pid is argv's)."""
        return ["ip", "netns", "exec", self.ns[role], *argv]

    def nsenter(self, role, argv):
        """argv in `role`'s network namespace only (mounts unchanged: /sys/fs/cgroup stays the
        host's, which the agent needs), via nsenter, which execs it."""
        return ["nsenter", f"--net=/run/netns/{self.ns[role]}", *argv]

    def call(self, role, function, *args):
        """function(*args) in a thread in `role`'s namespace (call_in_netns)."""
        return call_in_netns(self.ns[role], function, *args)

    def conntrack_entries(self, family=None):
        """The node's TCP conntrack entries (`conntrack -L -p tcp -o extended`), of `family`
        or of both."""
        entries = []
        for f in (family,) if family else FAMILIES:
            out = run(self.command("node", ["conntrack", "-L", "-f", f, "-p", "tcp",
                                            "-o", "extended"]))
            entries += parse_conntrack(out.stdout)
        return entries

    def conntrack_by_orig(self, family=None):
        return {e.orig: e for e in self.conntrack_entries(family)}

    def conntrack_by_reply(self, family=None):
        return {e.reply: e for e in self.conntrack_entries(family)}


@contextlib.contextmanager
def kube_proxy_net(mode, services):
    """A KubeProxyNet, created and always cleaned up."""
    net = KubeProxyNet(mode, services)
    with net:
        yield net
