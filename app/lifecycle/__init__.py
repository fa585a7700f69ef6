"""The model as it serves, and how it gets there and stays current. A ``ModelState``
(``state``) is one loaded model: the engine (``engine``), a ``DomainIndex`` per domain,
the items registered through the API (``registered``) and their categories
(``categories``). ``ServedModel`` (``served``) holds the one serving now and the write
lock; the ``ModelLoader`` (``reload``) builds a new one in the background, the
``ChangeFeed`` (``feed``) replays and publishes it, ``ReplicaSync`` keeps it in step with
other replicas (item changes, ``popularity``), and with a registry the ``BundleFollower``
(``bundle_follow``) loads what ``promotion`` announced, from paths ``bundles`` allows.
``parts`` is what the resource classes above share from all this."""
