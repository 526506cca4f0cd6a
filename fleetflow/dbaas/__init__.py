"""Database-as-a-Service: the seed's chain as plain functions over the registry and the clusters.

placement     which service cluster serves a requesting cluster (stable, recorded)
operator      the CloudNativePG operator via helm, and the record of what was installed where
provision     the CNPG Cluster for a requesting cluster, and waiting until it is really ready
credentials   copying the app secret's user/password and the LoadBalancer address to consumers
app           the seed's todo-table Job on clusters labelled type=app
inventory     what ``fleetflow show databases`` prints
"""
