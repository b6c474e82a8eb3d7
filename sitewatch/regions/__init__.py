"""Regions (issue 21, DESIGN.md section 12): checking each slot of a URL from several places.

What lives where:
* names.py: region names and down_when, as the config, the CLI and import/apply accept them;
* state.py (with queries.sql): each (URL, region)'s state as status, the web and the API read it;
* confirm.py: confirmation checks, the other regions' second opinion at a first failure.

The states themselves move in SQL, in the result's transaction: alert_apply_region_results
(db/migrations/regions.sql, replaced by 0016_region_confirm.sql, which adds confirmations);
the producer's one task per region and each region's claim are in db/queries.sql. This
package imports nothing at load time, so sitewatch.urlspec may import names.py without a cycle.
"""
