"""Sample inputs shared by the test modules."""

from __future__ import annotations

from plugin.identity import Alias, Identity

# Google's published single-ad sample VAST tag.
GAM_SAMPLE = (
    "https://pubads.g.doubleclick.net/gampad/ads?iu=/21775744923/external/single_ad_samples"
    "&sz=640x480&cust_params=sample_ct%3Dlinear&ciu_szs=300x250%2C728x90&gdfp_req=1"
    "&output=vast&unviewed_position_start=1&env=vp&impl=s&correlator="
)
DEVICE = Identity(alias=Alias(tag="idfa", id="6D92078A-8246-4BA4-AE5B-76104861E7DC"))

KUBERNETES_SERVICE_LINKS = {
    # `kubectl apply -k deploy/kubernetes` without enableServiceLinks: false: Services
    # `cohortkv` (port 80) and `cohortkv-redis` (port 6379).
    "COHORTKV_SERVICE_HOST": "10.96.0.10",
    "COHORTKV_SERVICE_PORT": "80",
    "COHORTKV_SERVICE_PORT_HTTP": "80",
    "COHORTKV_PORT": "tcp://10.96.0.10:80",
    "COHORTKV_PORT_80_TCP": "tcp://10.96.0.10:80",
    "COHORTKV_PORT_80_TCP_PROTO": "tcp",
    "COHORTKV_PORT_80_TCP_PORT": "80",
    "COHORTKV_PORT_80_TCP_ADDR": "10.96.0.10",
    "COHORTKV_REDIS_SERVICE_HOST": "10.96.0.11",
    "COHORTKV_REDIS_SERVICE_PORT": "6379",
    "COHORTKV_REDIS_PORT": "tcp://10.96.0.11:6379",
    "COHORTKV_REDIS_PORT_6379_TCP": "tcp://10.96.0.11:6379",
}
