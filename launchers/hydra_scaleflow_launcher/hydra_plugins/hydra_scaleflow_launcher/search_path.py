"""Makes `hydra/launcher=scaleflow` visible: adds this package's conf/ to Hydra's search path."""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class ScaleflowLauncherSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(provider="hydra-scaleflow-launcher",
                           path="pkg://hydra_plugins.hydra_scaleflow_launcher.conf")
