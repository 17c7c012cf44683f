"""Send notifications and exit, for the functional tests.

python -m tests.functional.notify_sender_proc --config-file F --topic T --count N
    [--start K] [--driver messaging|messagingv2]
"""

import argparse
import warnings

import oslo_messaging
from oslo_config import cfg
from oslo_context import context


def main() -> None:
    warnings.simplefilter("ignore")  # library deprecation notices: noise here
    parser = argparse.ArgumentParser()
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--driver", default="messagingv2")
    args = parser.parse_args()
    cfg.CONF(["--config-file", args.config_file])
    transport = oslo_messaging.get_notification_transport(cfg.CONF)
    notifier = oslo_messaging.Notifier(
        transport, publisher_id="sender", driver=args.driver, topics=[args.topic]
    )
    for n in range(args.start, args.start + args.count):
        notifier.info(context.RequestContext(user_id=f"user-{n}"), "test.event", {"n": n})
    transport.cleanup()


if __name__ == "__main__":
    main()
