"""An EnvoyFilter's MERGE patches applied to an Envoy configuration as istiod applies them, for the
subset of EnvoyFilter that deploy/istio uses (FILTER_CHAIN and CLUSTER, MERGE), so that the patch can
be run in a real Envoy without a cluster. Istio: pilot/pkg/networking/core/envoyfilter/
listener_patch.go (mergeTransportSocketListener) and cluster_patch.go (clusterMatch,
mergeTransportSocketCluster): a transport socket in the patch is merged into the chain's or cluster's
socket of the same name — with auto mTLS into the first ``transport_socket_matches`` entry of that
name — and everything else by protobuf merge (messages field by field, repeated fields appended)."""

from __future__ import annotations

import copy

INBOUND_LISTENER = "virtualInbound"  # Istio's name for the sidecar's inbound listener (15006)


def selects(envoy_filter: dict, namespace: str, labels: dict[str, str]) -> bool:
    """Whether the EnvoyFilter applies to a workload (its namespace, its workloadSelector's labels)."""
    if envoy_filter["metadata"].get("namespace") not in (None, namespace):
        return False
    wanted = envoy_filter["spec"].get("workloadSelector", {}).get("labels", {})
    return wanted.items() <= labels.items()


def apply_envoy_filter(bootstrap: dict, envoy_filter: dict) -> dict:
    """A copy of a bootstrap with the EnvoyFilter's patches merged into its static listeners and clusters.
    Patch kinds or match fields this helper does not know are refused, never skipped."""
    out = copy.deepcopy(bootstrap)
    resources = out["static_resources"]
    for patch in envoy_filter["spec"]["configPatches"]:
        assert patch["patch"]["operation"] == "MERGE", patch
        match, value = patch.get("match", {}), patch["patch"]["value"]
        context = match.get("context", "ANY")
        if patch["applyTo"] == "FILTER_CHAIN":
            for listener in resources.get("listeners", []):
                if context in ("ANY", _context_of_listener(listener)):
                    for chain in listener["filter_chains"]:
                        if _chain_matches(listener, chain, match.get("listener", {})):
                            _merge_socket_holder(chain, value)
        elif patch["applyTo"] == "CLUSTER":
            for cluster in resources.get("clusters", []):
                if context in ("ANY", _context_of_cluster(cluster)):
                    if _cluster_matches(cluster, match.get("cluster", {})):
                        _merge_cluster(cluster, value)
        else:
            raise AssertionError(f"applyTo {patch['applyTo']} is not handled here")
    return out


def _context_of_listener(listener: dict) -> str:
    return "SIDECAR_INBOUND" if listener["name"] == INBOUND_LISTENER else "SIDECAR_OUTBOUND"


def _context_of_cluster(cluster: dict) -> str:
    return "SIDECAR_INBOUND" if cluster["name"].startswith("inbound|") else "SIDECAR_OUTBOUND"


def _chain_matches(listener: dict, chain: dict, match: dict) -> bool:
    unknown = set(match) - {"name", "portNumber", "filterChain"}
    assert not unknown, f"listener match fields not handled: {unknown}"
    if "name" in match and match["name"] != listener["name"]:
        return False
    if "portNumber" in match and match["portNumber"] != listener["address"]["socket_address"]["port_value"]:
        return False
    want = match.get("filterChain", {})
    assert not set(want) - {"transportProtocol", "sni", "applicationProtocols"}, want
    have = chain.get("filter_chain_match", {})
    transport = have.get("transport_protocol", "raw_buffer")
    if "transportProtocol" in want and want["transportProtocol"] != transport:
        return False
    if "sni" in want and want["sni"] not in have.get("server_names", []):
        return False
    wanted_alpn = [a.strip() for a in want.get("applicationProtocols", "").split(",") if a.strip()]
    return all(a in have.get("application_protocols", []) for a in wanted_alpn)


def _cluster_matches(cluster: dict, match: dict) -> bool:
    assert not set(match) - {"name", "service", "portNumber", "subset"}, match
    if "name" in match:
        return match["name"] == cluster["name"]
    parts = cluster["name"].split("|")
    if len(parts) != 4:
        return not ({"service", "portNumber", "subset"} & set(match))
    _direction, port, subset, host = parts
    return (match.get("service", host) == host and match.get("subset", subset) == subset
            and match.get("portNumber", int(port or 0)) == int(port or 0))


def _merge_socket_holder(chain: dict, value: dict) -> None:
    """mergeTransportSocketListener: merge into a socket of the same name, else a plain merge."""
    socket, have = value.get("transport_socket"), chain.get("transport_socket")
    if socket is not None and have is not None:
        if socket["name"] == have["name"]:
            _merge_any(have["typed_config"], socket["typed_config"])
        return
    proto_merge(chain, value)


def _merge_cluster(cluster: dict, value: dict) -> None:
    """mergeTransportSocketCluster, then the rest of the patch by protobuf merge."""
    rest = {k: v for k, v in value.items() if k != "transport_socket"}
    socket = value.get("transport_socket")
    if socket is not None:
        matches = cluster.get("transport_socket_matches", [])
        if matches:
            target = next((m["transport_socket"] for m in matches
                           if m.get("transport_socket", {}).get("name") == socket["name"]), None)
            if target is not None:  # none of that name: Istio drops the socket patch
                _merge_any(target["typed_config"], socket["typed_config"])
        elif cluster.get("transport_socket", {}).get("name") == socket["name"]:
            _merge_any(cluster["transport_socket"]["typed_config"], socket["typed_config"])
        else:
            cluster["transport_socket"] = copy.deepcopy(socket)
    proto_merge(cluster, rest)


def _merge_any(dst: dict, src: dict) -> None:
    assert dst.get("@type") == src.get("@type"), (dst.get("@type"), src.get("@type"))  # MergeAnyWithAny
    proto_merge(dst, src)


def proto_merge(dst: dict, src: dict) -> None:
    """proto.Merge on the JSON form: messages merged field by field, repeated fields appended, scalars
    replaced."""
    for key, value in src.items():
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            proto_merge(dst[key], value)
        elif isinstance(value, list) and isinstance(dst.get(key), list):
            dst[key] = dst[key] + copy.deepcopy(value)
        else:
            dst[key] = copy.deepcopy(value)
