#!/usr/bin/env python3
"""Counts back, through the server's /fetch_course_events, the responses a run of
scripts/wrk/record_responses.lua wrote, and checks that every acknowledged one is there.

    python3 scripts/wrk/count_back.py --target http://127.0.0.1:PORT --token TOKEN \
        --run RUN --threads 4 --courses-per-thread 50 --acked N

The course uuids are derived exactly as the Lua script derives them. Exit status 1 when
fewer responses are read back than were acknowledged.
"""
import argparse
import json
import sys
import time
import urllib.request
import uuid


MULTIPLIERS = [40503, 9973, 52433, 30011, 61651, 12289, 47653, 23173]


def course_uuid(run: int, thread: int, index: int) -> str:
    """The uuid record_responses.lua gives course `index` of `thread` (kind 1)."""
    seed = (index * 131 + thread * 65537 + run * 257 + 1 * 8191) % 2**32
    g = [
        ((seed % 65536 + (seed // 65536) * (k + 1)) * MULTIPLIERS[k - 1] + k * 7919) % 65536
        for k in range(1, 9)
    ]
    return "%04x%04x-%04x-4%03x-8%03x-%04x%04x%04x" % (
        g[0], g[1], g[2], g[3] % 4096, g[4] % 4096, g[5], g[6], g[7]
    )


def post(target: str, token: str, path: str, body: dict) -> dict:
    request = urllib.request.Request(
        target + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Biglearn-Api-Token": token},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.load(answer)


def read_all(args, offsets: dict) -> int:
    """Reads every course from its offset to its end; returns how many responses it read."""
    counted = 0
    open_courses = list(offsets)
    while open_courses:
        chunk, open_courses = open_courses[:100], open_courses[100:]
        answer = post(
            args.target,
            args.token,
            "/fetch_course_events",
            {
                "course_event_requests": [
                    {
                        "request_uuid": str(uuid.uuid4()),
                        "course_uuid": course,
                        "sequence_number_offset": offsets[course],
                        "event_types": ["record_response"],
                    }
                    for course in chunk
                ],
                "max_num_events": 1000,
            },
        )
        for reply in answer["course_event_responses"]:
            course = reply["course_uuid"]
            for event in reply["events"]:
                counted += 1
                offsets[course] = max(offsets[course], event["sequence_number"] + 1)
            # Not at the end because of the shared limit: read on. With no event at all
            # the course stops at a gap (or has none yet): read it again in the next pass.
            if not reply["is_end"] and reply["events"]:
                open_courses.append(course)
    return counted


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--run", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--courses-per-thread", type=int, required=True)
    parser.add_argument("--acked", type=int, required=True, help="responses wrk saw acknowledged")
    args = parser.parse_args()

    offsets = {
        course_uuid(args.run, thread, index): 0
        for thread in range(args.threads)
        for index in range(args.courses_per_thread)
    }
    deadline_s = 300.0
    counted = 0
    passes = 0
    started = time.monotonic()
    # The projections may still be catching up: read on until every acknowledged
    # response is there, or the deadline passes.
    while passes == 0 or (counted < args.acked and time.monotonic() - started < deadline_s):
        if passes:
            time.sleep(1)
        counted += read_all(args, offsets)
        passes += 1
    print(
        json.dumps(
            {
                "count_back": "fetch_course_events",
                "courses": len(offsets),
                "acked_responses": args.acked,
                "counted_responses": counted,
                "passes": passes,
                "seconds": round(time.monotonic() - started, 2),
            }
        )
    )
    if counted < args.acked:
        print(f"only {counted} of {args.acked} acknowledged responses were read back", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
