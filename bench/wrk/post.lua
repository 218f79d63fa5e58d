-- POST with an empty body; nothing per response, so wrk stays out of the way.
wrk.method = "POST"
