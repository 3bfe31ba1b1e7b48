"""For the long-running client scripts the tests drive: an event set when "stop" arrives on
stdin (or stdin closes)."""
import sys
import threading


def stop_on_stdin():
    """Starts watching stdin; returns the event it sets."""
    stop = threading.Event()

    def watch():
        for line in sys.stdin:
            if line.strip() == "stop":
                break
        stop.set()

    threading.Thread(target=watch, daemon=True).start()
    return stop
