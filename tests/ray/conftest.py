"""Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER once, when it is imported: set to 0 before any test
module imports it, so that every node of a one-box ray.cluster_utils.Cluster (and the drivers the
tests start) uses 127.0.0.1 and nothing listens on the machine's interface address."""
import os

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
