"""Running fedsys on Flower's SuperLink / SuperNode: the ``fedsys server`` and ``fedsys client``
daemons (settings, supervision, lifetime, connection watch), keys and certificates, and the
key layout. What runs inside a client node's ClientApp processes lives in ``fedsys.client``."""
