"""Database requests: the namespaced ``Database`` resource (``fleetflow.io/v1alpha1``).

A team asks for a database by applying a ``Database`` object in its own namespace of a workload
cluster, as a GitOps tool would; fleetflow provisions a CloudNativePG Cluster for it on a service
cluster, writes the credentials into a Secret next to the request (never through the management
cluster) and reports progress in the object's status. This is the seed's "several databases per
cluster" step; the label path (``postgres=required``) stays as the cluster's default request.

- :mod:`.crd`     the CustomResourceDefinition: schema, validation rules, printer columns
- :mod:`.spec`    a request's spec with its defaults, and the CNPG Cluster name it maps to
"""
