"""The local fleet: real etcd, kube-apiserver and kube-controller-manager processes, one set per cluster."""
