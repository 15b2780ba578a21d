"""A tiny Scrapy crawl through ``authkeeper.scrapy.AuthkeeperMiddleware``, run as its own process
by test_scrapy.py (a Twisted reactor runs once per process). Writes what it saw as JSON."""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from typing import Any, AsyncIterator, Dict, List

import scrapy
from scrapy.crawler import CrawlerProcess
from scrapy.http import Response


class ProbeSpider(scrapy.Spider):
    name = "authkeeper-probe"

    def __init__(self, api: str, pages: str, key: str, duration: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.api = api
        self.pages = pages
        self.key = key
        self.stop_at = time.monotonic() + duration
        self.api_statuses: Counter[int] = Counter()
        self.probes: Dict[str, int] = {}

    async def start(self) -> AsyncIterator[scrapy.Request]:
        for name in (f"once401/{self.key}", "forbidden", "scope"):
            yield scrapy.Request(
                f"{self.pages}/{name}", callback=self.probe, cb_kwargs={"name": name.split("/")[0]}
            )
        yield scrapy.Request(
            self.api,
            callback=self.probe,
            cb_kwargs={"name": "override"},
            meta={"authkeeper_credential": "api"},
            dont_filter=True,
        )
        for _ in range(8):
            yield scrapy.Request(self.api, callback=self.loop, dont_filter=True)

    def probe(self, response: Response, name: str) -> None:
        self.probes[name] = response.status

    def loop(self, response: Response) -> List[scrapy.Request]:
        self.api_statuses[response.status] += 1
        if time.monotonic() < self.stop_at:
            return [scrapy.Request(self.api, callback=self.loop, dont_filter=True)]
        return []


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--api", required=True)
    parser.add_argument("--pages", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    process = CrawlerProcess(
        settings={
            "DOWNLOADER_MIDDLEWARES": {"authkeeper.scrapy.AuthkeeperMiddleware": 560},
            "AUTHKEEPER_CREDENTIAL": "scrapy",
            "HTTPERROR_ALLOWED_CODES": [401, 403],
            "RETRY_ENABLED": False,
            "ROBOTSTXT_OBEY": False,
            "TELNETCONSOLE_ENABLED": False,
            "LOG_LEVEL": "WARNING",
            "CONCURRENT_REQUESTS": 8,
        }
    )
    crawler = process.create_crawler(ProbeSpider)
    process.crawl(crawler, api=args.api, pages=args.pages, key=args.key, duration=args.duration)
    process.start()
    spider = crawler.spider
    assert isinstance(spider, ProbeSpider)
    stats = crawler.stats.get_stats() if crawler.stats else {}
    with open(args.out, "w") as out:
        json.dump(
            {
                "probes": spider.probes,
                "api_statuses": {str(k): v for k, v in spider.api_statuses.items()},
                "retried": stats.get("authkeeper/retried", 0),
                "finish_reason": stats.get("finish_reason"),
            },
            out,
        )


if __name__ == "__main__":
    main()
