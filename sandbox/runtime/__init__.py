"""Runtime of the sandbox clusters: kubelet, controllers, DNS, load balancers (see README.md)."""
