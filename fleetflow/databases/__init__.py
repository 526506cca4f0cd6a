"""fleetflow's one database domain: every database is a ``Database`` request (``fleetflow.io/v1alpha1``).

A team asks for a database by applying a ``Database`` object in its own namespace of a workload
cluster, as a GitOps tool would; the label ``postgres=required`` on a cluster is the Database
``fleetflow/<cluster>`` on it, applied by fleetflow. Either way one converge provisions a
CloudNativePG Cluster on a service cluster, writes the credentials next to the request (and,
for the label's, the seed's ``pg-credentials`` where the seed wants them) and reports progress
in the object's status; one finalise applies its deletion policy.

- :mod:`.names`      names written and read, in one place
- :mod:`.views`      typed views of a Database, a CNPG Cluster and its Service; :mod:`.secrets` of Secrets
- :mod:`.crd`        the CustomResourceDefinition: schema, validation rules, printer columns
- :mod:`.spec`       a request's spec with its defaults, and the CNPG Cluster name it maps to
- :mod:`.placement`  which service cluster serves a request (stable; a retained one adopted back)
- :mod:`.provision`  the CNPG Cluster: render, apply, wait until usable
- :mod:`.credentials` the Secret next to a request; :mod:`.delivery` the label path's seed pair
- :mod:`.converge`   make one request true; :mod:`.finalise` its deletion policy
- :mod:`.status`, :mod:`.health`  what a request shows, and its Cluster's readiness against it
- :mod:`.label`      the label path as a request; :mod:`.app` the seed's Job; :mod:`.operator` helm
- :mod:`.store`, :mod:`.inventory`, :mod:`.overview`  requests as the CLI and the API read them
- :mod:`.watcher`    requests, ``-app`` Secrets and CNPG Clusters as Prefect events
"""
