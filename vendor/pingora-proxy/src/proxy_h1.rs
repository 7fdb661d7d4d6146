// Copyright 2026 Cloudflare, Inc.
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
// http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

use futures::future::OptionFuture;
use futures::StreamExt;

use super::*;
use crate::proxy_cache::{range_filter::RangeBodyFilter, ServeFromCache};
use crate::proxy_common::*;
use pingora_cache::CachePhase;
use pingora_core::protocols::http::{
    authority::{raw_target_authority, validate_request_authority},
    custom::CUSTOM_MESSAGE_QUEUE_SIZE,
    v1::common::is_upgrade_req as is_h1_upgrade_req,
};

impl<SV, C> HttpProxy<SV, C>
where
    C: custom::Connector,
{
    pub(crate) async fn proxy_1to1(
        &self,
        session: &mut Session,
        client_session: &mut HttpSessionV1,
        peer: &HttpPeer,
        ctx: &mut SV::CTX,
    ) -> (bool, bool, Option<Box<Error>>)
    where
        SV: ProxyHttp + Send + Sync,
        SV::CTX: Send + Sync,
    {
        client_session.read_timeout = peer.options.read_timeout;
        client_session.write_timeout = peer.options.write_timeout;

        // phase 2 send to upstream

        let mut req = session.req_header().clone();
        let authority_policy = AuthorityPolicy::from(session.downstream_session.is_custom());
        let downstream_had_host = req.headers.contains_key(http::header::HOST);
        req.set_version(Version::HTTP_11);

        // H2 requires :authority but not Host; most H1 servers expect Host, so synthesize it when
        // sending an H2 downstream request to an H1 upstream.
        if session.req_header().version == Version::HTTP_2 {
            let result = match authority_policy {
                AuthorityPolicy::Standard => set_h1_host_from_authority(&mut req),
                AuthorityPolicy::Custom => set_h1_host_from_authority_if_absent(&mut req),
            };
            if let Err(e) = result {
                return (false, true, Some(e.into_down()));
            }
        }

        if let Err(e) = sanitize_h1_upstream_request(
            &mut req,
            peer.options.http_upstream_request_policy,
            session.req_header().version == Version::HTTP_11,
        ) {
            return (false, true, Some(e.into_down()));
        }

        if session.cache.enabled() {
            pingora_cache::filters::upstream::request_filter(
                &mut req,
                session.cache.maybe_cache_meta(),
            );
            session.mark_upstream_headers_mutated_for_cache();
        }

        match self
            .inner
            .upstream_request_filter(session, &mut req, ctx)
            .await
        {
            Ok(_) => { /* continue */ }
            Err(e) => {
                return (false, true, Some(e));
            }
        }

        // Reconcile and revalidate after request filters, which can mutate Host, URI, or target.
        // rtsup (vendored change 27): not when they cannot, for an HTTP/1.x request that came
        // with a Host: its authority is the one validated when it was read (the hop-by-hop
        // sanitizing above refuses a nominated Host), and it already has its Host.
        // A CONNECT's target may be rewritten by the reconcile step: it keeps the whole block.
        let authority_as_read = downstream_had_host
            && session.req_header().version != Version::HTTP_2
            && session.req_header().method != http::Method::CONNECT
            && !self.inner.filters_change_authority();
        if authority_policy.is_standard() && !authority_as_read {
            if let Err(e) = reconcile_upstream_authority(&mut req) {
                return (false, true, Some(e.into_in()));
            }
            // A filter may delete Host. Restore it for requests that originally carried one or
            // whose URI or absolute-form target has an authority, without adding a new empty Host
            // to Host-less HTTP/1.0 origin-form.
            let target_has_authority = raw_target_authority(req.raw_path()).authority().is_some();
            if downstream_had_host || req.uri.authority().is_some() || target_has_authority {
                if let Err(e) = set_h1_host_from_authority(&mut req) {
                    return (false, true, Some(e.into_in()));
                }
            }
            if let Err(e) = validate_request_authority(&req) {
                // The final filter-produced request is invalid, so classify this as internal.
                return (false, true, Some(e.into_in()));
            }
        }

        if let Err(e) = finalize_h1_upstream_request_framing(&mut req, !session.is_body_empty()) {
            return (false, true, Some(e));
        }

        let upgrade = is_h1_upgrade_req(&req);
        session.set_upstream_h1_upgrade_request_status(upgrade);
        // An upgrade the app takes out of the proxy once it went through (see `Tunnel`).
        let tunnel = upgrade
            && session.downstream_session.as_http1().is_some()
            && self.inner.tunnel_upgraded(session, ctx);

        session.upstream_compression.request_filter(&req);

        let single_loop = proxied_by_one_loop(session, upgrade);

        debug!("Sending header to upstream {:?}", req);

        match client_session.write_request_header(Box::new(req)).await {
            Ok(_) => { /* Continue */ }
            Err(e) => {
                return (false, false, Some(e.into_up()));
            }
        }

        if single_loop {
            return self
                .proxy_single_loop_1to1(session, client_session, ctx)
                .await;
        }

        let mut downstream_custom_message_writer = session
            .downstream_session
            .as_custom_mut()
            .and_then(|c| c.take_custom_message_writer());
        // Keep the reader in this caller so it is restored even if retryable
        // upstream errors make try_join! cancel the downstream future.
        let mut downstream_custom_message_reader = match session
            .take_downstream_custom_message_reader(&mut downstream_custom_message_writer)
        {
            Ok(reader) => reader,
            Err(e) => return (false, false, Some(e)),
        };

        let (tx_upstream, rx_upstream) = mpsc::channel::<HttpTask>(TASK_BUFFER_SIZE);
        let (tx_downstream, rx_downstream) = mpsc::channel::<HttpTask>(TASK_BUFFER_SIZE);

        session.as_mut().enable_retry_buffering();

        // Shared signal so the upstream half can distinguish an expected task-pipe
        // closure (the downstream half finished and dropped rx) from an unexpected one.
        let pipe_state = Arc::new(AtomicU8::new(PipeState::Active as u8));

        // start bi-directional streaming
        let ret = tokio::try_join!(
            self.proxy_handle_downstream(
                session,
                tx_downstream,
                rx_upstream,
                ctx,
                &mut downstream_custom_message_writer,
                &mut downstream_custom_message_reader,
                pipe_state.clone(),
                tunnel,
            ),
            self.proxy_handle_upstream(
                client_session,
                tx_upstream,
                rx_downstream,
                pipe_state,
                tunnel
            ),
        );
        if tunnel && ret.is_ok() && session.was_upgraded() && client_session.was_upgraded() {
            // Both halves stopped right after the 101: no upgraded byte was read on either side.
            session.tunnel_taken = true;
            return (false, false, None);
        }

        if let Some(custom_session) = session.downstream_session.as_custom_mut() {
            if let Some(downstream_custom_message_writer) = downstream_custom_message_writer {
                match custom_session.restore_custom_message_writer(downstream_custom_message_writer)
                {
                    Ok(_) => { /* continue */ }
                    Err(e) => {
                        return (false, false, Some(e));
                    }
                }
            }
            if let Some(downstream_custom_message_reader) = downstream_custom_message_reader {
                match custom_session.restore_custom_message_reader(downstream_custom_message_reader)
                {
                    Ok(_) => { /* continue */ }
                    Err(e) => {
                        return (false, false, Some(e));
                    }
                }
            }
        }

        match ret {
            Ok((downstream_can_reuse, upstream_can_reuse)) => {
                (downstream_can_reuse, upstream_can_reuse, None)
            }
            Err(e) => (false, false, Some(e)),
        }
    }

    /// rtsup (vendored change 14): [`Self::proxy_1to1`] for a request without a body (or,
    /// change 29, whose whole body is already in memory), once its header is written upstream.
    /// The two halves of the general path (one reading the client, one the upstream, joined by
    /// two task pipes) become one loop: the body goes through the request body filters and
    /// ends the upstream request, then the response is read, batched as the pipe would have
    /// batched it, filtered and written downstream, while the client is watched for a close
    /// (so an abandoned long poll is not waited out). The filters, their order, the retry
    /// buffer and the reuse decisions are the general path's.
    async fn proxy_single_loop_1to1(
        &self,
        session: &mut Session,
        client_session: &mut HttpSessionV1,
        ctx: &mut SV::CTX,
    ) -> (bool, bool, Option<Box<Error>>)
    where
        SV: ProxyHttp + Send + Sync,
        SV::CTX: Send + Sync,
    {
        session.as_mut().enable_retry_buffering();
        // A body, if any, is read whole from the bytes that came with the header (into the
        // retry buffer too), without I/O.
        let mut data = None;
        if !session.is_body_empty() {
            let read = session.downstream_session.read_body_or_idle(false);
            match tokio::task::unconstrained(read).now_or_never() {
                Some(Ok(body)) => data = body,
                Some(Err(e)) => return (false, false, Some(e.into_down())),
                None => {
                    return (
                        false,
                        false,
                        Some(Error::explain(
                            InternalError,
                            "request body held in memory needed a read",
                        )),
                    )
                }
            }
        }
        // As in the general path, a request that could not be ended upstream still has its
        // response read (an upstream may answer early), but the connection is not reused and
        // the send error is the one reported if no response comes.
        if let Err(e) = self
            .filter_request_body(session, &mut data, true, ctx)
            .await
        {
            return (false, false, Some(e));
        }
        let mut send_error = send_body_to1(client_session, Some(HttpTask::Body(data, true)))
            .await
            .err();
        if let Some(e) = &send_error {
            warn!("send error, draining read buf: {e}");
        }
        let upstream_reusable = send_error.is_none();

        let mut response_state = ResponseStateMachine::new();
        let mut serve_from_cache = ServeFromCache::new();
        let mut range_body_filter = RangeBodyFilter::new();
        let mut watch_downstream = true;
        loop {
            let first = tokio::select! {
                biased;
                task = client_session.read_response_task() => task,
                idle = session.downstream_session.read_body_or_idle(true), if watch_downstream => {
                    match idle {
                        // The client closed (or sent bytes where none belong) before its
                        // response was written.
                        Err(e) => return (false, false, Some(e.into_down())),
                        // Only a body read returns data, and this request's body (if any) was
                        // read whole above: stop watching rather than poll a finished read again.
                        Ok(_) => watch_downstream = false,
                    }
                    continue;
                }
            };
            let mut tasks = Vec::with_capacity(TASK_BUFFER_SIZE);
            let mut done = push_response_task(&mut tasks, first, &mut send_error);
            // What the upstream already sent goes out in the same write, as the pipe's batch.
            while !done && tasks.len() < TASK_BUFFER_SIZE {
                match tokio::task::unconstrained(client_session.read_response_task()).now_or_never()
                {
                    Some(task) => done = push_response_task(&mut tasks, task, &mut send_error),
                    None => break,
                }
            }
            // A failed task comes back as the error of this write.
            match self
                .filter_and_write_upstream_tasks(
                    session,
                    ctx,
                    tasks,
                    &mut serve_from_cache,
                    &mut range_body_filter,
                    &mut response_state,
                )
                .await
            {
                Ok(Some(end)) if end || done => break,
                Ok(Some(_)) => {}
                // Only a cache serves instead of the upstream, and this path runs without one.
                Ok(None) => {
                    return (
                        false,
                        false,
                        Some(Error::explain(
                            InternalError,
                            "single-loop proxy path wrote no response",
                        )),
                    )
                }
                Err(e) => return (false, false, Some(e)),
            }
        }

        match session.as_mut().finish_body().await {
            Ok(_) => (true, upstream_reusable, None),
            Err(e) => {
                error!("Error finish sending body to downstream: {}", e);
                (false, upstream_reusable, None)
            }
        }
    }

    pub(crate) async fn proxy_to_h1_upstream(
        &self,
        session: &mut Session,
        client_session: &mut HttpSessionV1,
        reused: bool,
        peer: &HttpPeer,
        ctx: &mut SV::CTX,
    ) -> (bool, bool, Option<Box<Error>>)
    // (reuse_server, reuse_client, error)
    where
        SV: ProxyHttp + Send + Sync,
        SV::CTX: Send + Sync,
    {
        #[cfg(windows)]
        let raw = client_session.id() as std::os::windows::io::RawSocket;
        #[cfg(unix)]
        let raw = client_session.id();

        let initial_write_pending = client_session.stream().get_write_pending_time();

        if let Err(e) = self
            .inner
            .connected_to_upstream(
                session,
                reused,
                peer,
                raw,
                Some(client_session.digest()),
                ctx,
            )
            .await
        {
            return (false, false, Some(e));
        }

        let (server_session_reuse, client_session_reuse, error) =
            self.proxy_1to1(session, client_session, peer, ctx).await;

        // Record upstream response body bytes received (payload only) for logging consumers.
        let upstream_bytes_total = client_session.body_bytes_received();
        session.set_upstream_body_bytes_received(upstream_bytes_total);

        // Record request body bytes written to the upstream (payload only) for logging consumers.
        // Only HTTP/1.x tracks this; see `Session::upstream_body_bytes_sent`.
        session.set_upstream_body_bytes_sent(client_session.body_bytes_sent());

        // Record upstream write pending time for this session only (delta from baseline).
        let current_write_pending = client_session.stream().get_write_pending_time();
        let upstream_write_pending = current_write_pending.saturating_sub(initial_write_pending);
        session.set_upstream_write_pending_time(upstream_write_pending);

        (server_session_reuse, client_session_reuse, error)
    }

    async fn proxy_handle_upstream(
        &self,
        client_session: &mut HttpSessionV1,
        tx: mpsc::Sender<HttpTask>,
        mut rx: mpsc::Receiver<HttpTask>,
        pipe_state: Arc<AtomicU8>,
        stop_on_upgrade: bool,
    ) -> Result<bool>
    where
        SV: ProxyHttp + Send + Sync,
        SV::CTX: Send + Sync,
    {
        let mut request_done = false;
        let mut response_done = false;
        let mut upstream_can_reuse = true;
        let mut send_error = None;
        let mut upgraded = false;

        /* duplex mode, wait for either to complete */
        while !request_done || !response_done {
            tokio::select! {
                res = client_session.read_response_task(), if !response_done => {
                    match res {
                        Ok(task) => {
                            response_done = task.is_end();
                            if !upgraded && client_session.was_upgraded() {
                                // upgrade can only happen once
                                upgraded = true;
                                if send_error.is_none() {
                                    // continue receiving from downstream after body mode change
                                    request_done = false;
                                }
                            }
                            let type_str = task.type_str();
                            let result = tx.send(task)
                                .await.or_err_with(
                                    InternalError,
                                    || format!("Failed to send upstream task {type_str}{} to pipe",
                                        if response_done { " (end)" } else {""})
                                );
                            if stop_on_upgrade && upgraded {
                                // The 101 is on its way to the client; the connection leaves
                                // the proxy as a tunnel, so not one upgraded byte is read here.
                                return result.map(|_| false);
                            }
                            // If the request is upgraded, the downstream pipe can early exit
                            // when the downstream connection is closed.
                            // In that case, this function should ignore that the pipe is closed.
                            // So that this function could read the rest events from rx including
                            // the closure, then exit.
                            if result.is_err() && !client_session.was_upgraded() {
                                if PipeState::is_downstream_complete(
                                    pipe_state.load(Ordering::Acquire),
                                ) {
                                    // The downstream half finished the response by its own framing
                                    // and dropped the task pipe, so this send failure is benign.
                                    if response_done {
                                        // The whole upstream response was already read off the
                                        // socket. Keep looping so the request side can finish; the
                                        // natural loop exit then decides reuse from both directions
                                        // (the connection is reusable only if the request was also
                                        // fully sent, which a premature response can leave undone).
                                        continue;
                                    }
                                    // We stopped mid-response, so the upstream connection has
                                    // unread bytes and is unsafe to reuse.
                                    return Ok(false);
                                }
                                // The pipe closed but the downstream half did not signal completion:
                                // this is an unexpected closure, so surface the original send error.
                                return Err(result.expect_err("send failure already checked via is_err() above"));
                            }
                        },
                        Err(e) => {
                            // Push the error to downstream and then quit
                            // Don't care if send fails: downstream already gone
                            let _ = tx.send(HttpTask::Failed(send_error.unwrap_or(e).into_up())).await;
                            // A response read error means the HTTP/1 message boundary was not
                            // established successfully, so the connection cannot be reused.
                            return Ok(false)
                        }
                    }
                },

                body = rx.recv(), if !request_done => {
                    match send_body_to1(client_session, body).await {
                        Ok(send_done) => {
                            request_done = send_done;
                            // An upgraded request is terminated when either side is done
                            if request_done && client_session.was_upgraded() {
                                response_done = true;
                            }
                        },
                        Err(e) => {
                           warn!("send error, draining read buf: {e}");
                           request_done = true;

                           // Built-in HTTP downstream sessions are expected to reject
                           // incomplete bodies before reaching this state. A downstream
                           // session that does not report such an error or an upstream request
                           // mutation that creates inconsistent framing can still reach it.
                           // A complete response can be forwarded, but the partially written
                           // HTTP/1 request makes this connection unsafe to reuse.
                           upstream_can_reuse = false;
                           send_error = Some(e);
                           continue
                        }
                    }
                },

                else => {
                    // this shouldn't be reached as the while loop would already exit
                    break;
                }
            }
        }

        Ok(upstream_can_reuse)
    }

    #[allow(clippy::too_many_arguments)]
    async fn process_upstream_tasks(
        &self,
        session: &mut Session,
        ctx: &mut SV::CTX,
        initial_task: HttpTask,
        rx: &mut mpsc::Receiver<HttpTask>,
        serve_from_cache: &mut ServeFromCache,
        range_body_filter: &mut proxy_cache::range_filter::RangeBodyFilter,
        response_state: &mut ResponseStateMachine,
    ) -> Result<Option<bool>>
    where
        SV: ProxyHttp + Send + Sync,
        SV::CTX: Send + Sync,
    {
        if serve_from_cache.should_discard_upstream() {
            // Serving the cached response and discarding the upstream one; nothing
            // is written downstream this round, so return None and let the caller
            // continue.
            return Ok(None);
        }

        // Batch: pull as many tasks as we can from rx
        let mut tasks = Vec::with_capacity(TASK_BUFFER_SIZE);
        tasks.push(initial_task);
        // tokio::task::unconstrained because now_or_never may yield None when the future is ready
        while let Some(maybe_task) = tokio::task::unconstrained(rx.recv()).now_or_never() {
            debug!("upstream event now: {:?}", maybe_task);
            if let Some(t) = maybe_task {
                tasks.push(t);
            } else {
                break; // upstream closed
            }
        }

        self.filter_and_write_upstream_tasks(
            session,
            ctx,
            tasks,
            serve_from_cache,
            range_body_filter,
            response_state,
        )
        .await
    }

    /// Runs the response filters over a batch of upstream tasks and writes them downstream;
    /// `None` when nothing is to be sent downstream (a cached response is served instead).
    async fn filter_and_write_upstream_tasks(
        &self,
        session: &mut Session,
        ctx: &mut SV::CTX,
        tasks: Vec<HttpTask>,
        serve_from_cache: &mut ServeFromCache,
        range_body_filter: &mut proxy_cache::range_filter::RangeBodyFilter,
        response_state: &mut ResponseStateMachine,
    ) -> Result<Option<bool>>
    where
        SV: ProxyHttp + Send + Sync,
        SV::CTX: Send + Sync,
    {
        /* run filters before sending to downstream */
        let mut filtered_tasks = Vec::with_capacity(TASK_BUFFER_SIZE);
        for mut t in tasks {
            if self.revalidate_or_stale(session, &mut t, ctx).await {
                serve_from_cache.enable();
                response_state.enable_cached_response();
                // skip downstream filtering entirely as the 304 will not be sent
                break;
            }
            #[cfg(feature = "upstream_modules")]
            if let HttpTask::Header(header, end_of_stream) = &t {
                self.inner
                    .adjust_upstream_modules(session, header, *end_of_stream, ctx)
                    .await?;
            }
            #[cfg(feature = "upstream_modules")]
            session.upstream_modules_filter_task(&mut t).await?;
            session.upstream_compression.response_filter(&mut t);
            let task = self
                .h1_response_filter(session, t, ctx, serve_from_cache, range_body_filter, false)
                .await?;
            if serve_from_cache.is_miss_header() {
                response_state.enable_cached_response();
            }
            // check error and abort
            // otherwise the error is surfaced via write_response_tasks()
            if !serve_from_cache.should_send_to_downstream() {
                if let HttpTask::Failed(e) = task {
                    return Err(e);
                }
            }
            filtered_tasks.push(task);
        }

        if !serve_from_cache.should_send_to_downstream() {
            // TODO: need to derive response_done from filtered_tasks in case downstream failed already
            return Ok(None);
        }

        let response_done = session.write_response_tasks(filtered_tasks).await?;

        Ok(Some(response_done))
    }

    // todo use this function to replace bidirection_1to2()
    // returns whether this server (downstream) session can be reused
    #[allow(clippy::too_many_arguments)]
    async fn proxy_handle_downstream(
        &self,
        session: &mut Session,
        tx: mpsc::Sender<HttpTask>,
        mut rx: mpsc::Receiver<HttpTask>,
        ctx: &mut SV::CTX,
        downstream_custom_message_writer: &mut Option<Box<dyn CustomMessageWrite>>,
        downstream_custom_message_reader: &mut Option<
            Box<dyn futures::Stream<Item = Result<Bytes>> + Unpin + Send + Sync + 'static>,
        >,
        pipe_state: Arc<AtomicU8>,
        stop_on_upgrade: bool,
    ) -> Result<bool>
    where
        SV: ProxyHttp + Send + Sync,
        SV::CTX: Send + Sync,
    {
        // setup custom message forwarding, if downstream supports it
        let (
            mut downstream_custom_read,
            mut downstream_custom_write,
            downstream_custom_message_custom_forwarding,
            mut downstream_custom_message_inject_rx,
        ) = if downstream_custom_message_writer.is_some() {
            let (inject_tx, inject_rx) = mpsc::channel::<Bytes>(CUSTOM_MESSAGE_QUEUE_SIZE);
            (true, true, Some(inject_tx), Some(inject_rx))
        } else {
            (false, false, None, None)
        };

        if let Some(custom_forwarding) = downstream_custom_message_custom_forwarding {
            // Custom handles are owned by the caller so an early error here still
            // lets the caller restore them before retrying another upstream.
            self.inner
                .custom_forwarding(session, ctx, None, custom_forwarding)
                .await?;
        }

        let mut downstream_state = DownstreamStateMachine::new(session.as_mut().is_body_done());

        let buffer = session.as_ref().get_retry_buffer();

        // retry, send buffer if it exists or body empty
        if buffer.is_some() || session.as_mut().is_body_empty() {
            let send_permit = tx
                .reserve()
                .await
                .or_err(InternalError, "reserving body pipe")?;
            self.send_body_to_pipe(
                session,
                buffer,
                downstream_state.is_done(),
                send_permit,
                ctx,
            )
            .await?;
        }

        let mut response_state = ResponseStateMachine::new();

        // these two below can be wrapped into an internal ctx
        // use cache when upstream revalidates (or TODO: error)
        let mut serve_from_cache = proxy_cache::ServeFromCache::new();
        let mut range_body_filter = proxy_cache::range_filter::RangeBodyFilter::new();

        let mut next_upstream_task: Option<HttpTask> = None;

        /* duplex mode without caching
         * Read body from downstream while reading response from upstream
         * If response is done, only read body from downstream
         * If request is done, read response from upstream while idling downstream (to close quickly)
         * If both are done, quit the loop
         *
         * With caching + but without partial read support
         * Similar to above, cache admission write happen when the data is write to downstream
         *
         * With caching + partial read support
         * A. Read upstream response and write to cache
         * B. Read data from cache and send to downstream
         * If B fails (usually downstream close), continue A.
         * If A fails, exit with error.
         * If both are done, quit the loop
         * Usually there is no request body to read for cacheable request
         */
        while !downstream_state.is_done()
            || !response_state.is_done()
            || downstream_custom_read && !downstream_state.is_errored()
            || downstream_custom_write
        {
            // reserve tx capacity ahead to avoid deadlock, see below

            let send_permit = tx
                .try_reserve()
                .or_err(InternalError, "try_reserve() body pipe for upstream");

            // Use optional futures to allow using optional channels in select branches
            let custom_inject_rx_recv: OptionFuture<_> = downstream_custom_message_inject_rx
                .as_mut()
                .map(|rx| rx.recv())
                .into();
            let custom_reader_next: OptionFuture<_> = downstream_custom_message_reader
                .as_mut()
                .map(|reader| reader.next())
                .into();

            // partial read support, this check will also be false if cache is disabled.
            let support_cache_partial_read =
                session.cache.support_streaming_partial_write() == Some(true);
            let upgraded = session.was_upgraded();

            tokio::select! {
                // only try to send to pipe if there is capacity to avoid deadlock
                // Otherwise deadlock could happen if both upstream and downstream are blocked
                // on sending to their corresponding pipes which are both full.
                body = session.downstream_session.read_body_or_idle(downstream_state.is_done()),
                    if downstream_state.can_poll() && send_permit.is_ok() => {

                    debug!("downstream event");
                    let body = match body {
                        Ok(b) => b,
                        Err(e) => {
                            let wait_for_cache_fill = (!serve_from_cache.is_on() && support_cache_partial_read)
                                || serve_from_cache.is_miss();
                            if wait_for_cache_fill {
                                // ignore downstream error so that upstream can continue to write cache
                                downstream_state.to_errored();
                                if !self.inner.suppress_proxy_warn_log(
                                    session,
                                    ctx,
                                    &e,
                                    ProxyWarnLogContext::DownstreamCache,
                                ) {
                                    warn!(
                                        "Downstream Error ignored during caching: {}, {}",
                                        e,
                                        self.inner.request_summary(session, ctx)
                                    );
                                }
                                // This will not be treated as a final error, but we should signal to
                                // downstream session regardless
                                session.downstream_session.on_proxy_failure(e);
                                continue;
                           } else {
                                return Err(e.into_down());
                           }
                        }
                    };
                    // If the request is websocket, `None` body means the request is closed.
                    // Set the response to be done as well so that the request completes normally.
                    if body.is_none() && session.was_upgraded() {
                        response_state.maybe_set_upstream_done(true);
                    }
                    // TODO: consider just drain this if serve_from_cache is set
                    let is_body_done = session.is_body_done();
                    let request_done = self.send_body_to_pipe(
                        session,
                        body,
                        is_body_done,
                        send_permit.unwrap(), // safe because we checked is_ok()
                        ctx,
                    )
                    .await?;
                    downstream_state.maybe_finished(request_done);
                },

                _ = tx.reserve(), if downstream_state.is_reading() && send_permit.is_err() => {
                    // If tx is closed, the upstream has already finished its job.
                    downstream_state.maybe_finished(tx.is_closed());
                    debug!("waiting for permit {send_permit:?}, upstream closed {}", tx.is_closed());
                     /* No permit, wait on more capacity to avoid starving.
                     * Otherwise this select only blocks on rx, which might send no data
                     * before the entire body is uploaded.
                     * once more capacity arrives we just loop back
                     */
                },

                // Handle buffered upstream task from previous iteration
                task = async { next_upstream_task.take() }, if next_upstream_task.is_some() => {
                    debug!("buffered upstream event: {:?}", task);
                    if let Some(t) = task {
                        let Some(response_done) = self.process_upstream_tasks(
                            session,
                            ctx,
                            t,
                            &mut rx,
                            &mut serve_from_cache,
                            &mut range_body_filter,
                            &mut response_state,
                        ).await? else {
                            // nothing sent downstream e.g. serve_from_cache
                            continue;
                        };
                        if stop_on_upgrade && session.was_upgraded() {
                            // The 101 is written: the connection leaves as a tunnel.
                            return Ok(false);
                        }
                        response_state.maybe_set_upstream_done(response_done);
                        // unsuccessful upgrade response may force the request done
                        downstream_state.maybe_finished(session.is_body_done());
                    } else {
                        debug!("empty upstream event");
                        response_state.maybe_set_upstream_done(true);
                    }
                },

                task = rx.recv(), if !response_state.upstream_done() && next_upstream_task.is_none() => {
                    debug!("upstream event: {:?}", task);
                    if let Some(t) = task {
                        let upgraded = session.was_upgraded();
                        let Some(response_done) = self.process_upstream_tasks(
                            session,
                            ctx,
                            t,
                            &mut rx,
                            &mut serve_from_cache,
                            &mut range_body_filter,
                            &mut response_state,
                        ).await? else {
                            // nothing sent downstream e.g. serve_from_cache
                            continue;
                        };
                        if stop_on_upgrade && session.was_upgraded() {
                            // The 101 is written: the connection leaves as a tunnel, before a
                            // byte of the client's upgraded stream is read.
                            return Ok(false);
                        }
                        if !upgraded && session.was_upgraded() && downstream_state.can_poll() {
                            // TODO: write can happen async now
                            // just upgraded, the downstream state should be reset to continue to
                            // poll body
                            trace!("reset downstream state on upgrade");
                            downstream_state.reset();
                        }
                        response_state.maybe_set_upstream_done(response_done);
                        // unsuccessful upgrade response (or end of upstream upgraded conn,
                        // which forces the body reader to complete) may force the request done
                        downstream_state.maybe_finished(session.is_body_done());
                    } else {
                        debug!("empty upstream event");
                        response_state.maybe_set_upstream_done(true);
                    }
                },

                task = serve_from_cache.next_http_task(&mut session.cache, &mut range_body_filter, upgraded),
                    if !response_state.cached_done()
                        && !downstream_state.is_errored()
                        && serve_from_cache.is_on()
                        && !session.has_pending_downstream_tasks() => { // backpressure: don't queue if pending writes

                    let task = self.h1_response_filter(session, task?, ctx,
                        &mut serve_from_cache,
                        &mut range_body_filter, true).await?;
                    debug!("serve_from_cache task {task:?}");

                    if session.downstream_session.supports_proxy_task_api() {
                        session.send_downstream_proxy_task(task).await?;
                    } else {
                        match session.write_response_tasks(vec![task]).await {
                            Ok(b) => response_state.maybe_set_cache_done(b),
                            Err(e) => if serve_from_cache.is_miss() {
                                // give up writing to downstream but wait for upstream cache write to finish
                                downstream_state.to_errored();
                                response_state.maybe_set_cache_done(true);
                                if !self.inner.suppress_proxy_warn_log(
                                    session,
                                    ctx,
                                    &e,
                                    ProxyWarnLogContext::DownstreamCache,
                                ) {
                                    warn!(
                                        "Downstream Error ignored during caching: {}, {}",
                                        e,
                                        self.inner.request_summary(session, ctx)
                                    );
                                }
                                // This will not be treated as a final error, but we should signal to
                                // downstream session regardless
                                session.downstream_session.on_proxy_failure(e);
                                continue;
                            } else {
                                return Err(e);
                            }
                        }
                        // A storage error can disable cache between cached_done
                        // being set and here; disable() drops the enabled_ctx so
                        // finish_hit_handler would panic without this guard.
                        if response_state.cached_done() && session.cache.enabled() {
                            if let Err(e) = session.cache.finish_hit_handler().await {
                                warn!("Error during finish_hit_handler: {}", e);
                            }
                        }
                    }
                }

                // Write queued downstream proxy tasks while also polling for upstream tasks.
                // This allows cache writes to continue even when downstream is stalled.
                //
                // "Gate" branch: ready(()) resolves immediately, so the guard controls
                // whether we enter. This is not a busy-loop because every path through
                // the inner select either (a) drains all pending tasks via
                // write_downstream_proxy_tasks (making the guard false), (b) observes a
                // downstream write error (making downstream_state errored and the guard false),
                // (c) stores an upstream task in next_upstream_task (making the guard false), or
                // (d) blocks on real I/O inside the nested select.
                _ = std::future::ready(()),
                    if !downstream_state.is_errored()
                        && session.has_pending_downstream_tasks()
                        && next_upstream_task.is_none() => {
                    tokio::select! {
                        // Try to write downstream proxy tasks (cancel-safe)
                        write_result = session.write_downstream_proxy_tasks() => {
                            match write_result {
                                Ok(end) => {
                                    response_state.maybe_set_cache_done(end);
                                    // See enabled() guard comment above.
                                    if response_state.cached_done() && session.cache.enabled() {
                                        if let Err(e) = session.cache.finish_hit_handler().await {
                                            warn!("Error during finish_hit_handler: {}", e);
                                        }
                                    }
                                }
                                Err(e) => if serve_from_cache.is_miss() {
                                    // give up writing to downstream but wait for upstream cache write to finish
                                    downstream_state.to_errored();
                                    response_state.maybe_set_cache_done(true);
                                    if !self.inner.suppress_proxy_warn_log(
                                        session,
                                        ctx,
                                        &e,
                                        ProxyWarnLogContext::DownstreamCache,
                                    ) {
                                        warn!(
                                            "Downstream write error ignored during caching: {}, {}",
                                            e,
                                            self.inner.request_summary(session, ctx)
                                        );
                                    }
                                    // This will not be treated as a final error, but we should signal to
                                    // downstream session regardless
                                    session.downstream_session.on_proxy_failure(e);
                                } else {
                                    return Err(e);
                                }
                            }
                        }

                        // Also poll for upstream tasks - if we get one, cancel the write and handle it.
                        // Only poll if there is no buffered task already waiting to be processed.
                        upstream_task = rx.recv(), if !response_state.upstream_done() && serve_from_cache.is_on() && next_upstream_task.is_none() => {
                            if let Some(t) = upstream_task {
                                // Store this upstream task to be processed next iteration
                                next_upstream_task = Some(t);
                                continue;
                            } else {
                                response_state.maybe_set_upstream_done(true);
                            }
                        }
                    }
                }

                data = custom_reader_next, if downstream_custom_read && !downstream_state.is_errored()  => {
                    let Some(data) = data.flatten() else {
                        downstream_custom_read = false;
                        continue;
                    };

                    let data = match data {
                        Ok(data) => data,
                        Err(err) =>  {
                            warn!("downstream_custom_message_reader got error: {err}");
                            downstream_custom_read = false;
                            continue;
                        },
                    };

                    self.inner
                        .downstream_custom_message_proxy_filter(session, data, ctx, true) // true, because it's the last hop for downstream proxying
                        .await?;
                },

                data = custom_inject_rx_recv, if downstream_custom_write => {
                    match data.flatten() {
                        Some(data) => {
                            if let Some(ref mut custom_writer) = downstream_custom_message_writer {
                                custom_writer.write_custom_message(data).await?
                            }
                        },
                        None => {
                            downstream_custom_write = false;
                            if let Some(ref mut custom_writer) = downstream_custom_message_writer {
                                custom_writer.finish_custom().await?;
                            }
                        },
                    }
                },

                else => {
                    break;
                }
            }
        }

        let mut reuse_downstream = !downstream_state.is_errored();
        if reuse_downstream {
            match session.as_mut().finish_body().await {
                Ok(_) => {
                    debug!("finished sending body to downstream");
                }
                Err(e) => {
                    error!("Error finish sending body to downstream: {}", e);
                    reuse_downstream = false;
                }
            }
        }
        // Signal the upstream half that the downstream half completed cleanly before
        // dropping rx, so a resulting task-pipe closure is treated as benign.
        pipe_state.store(PipeState::DownstreamComplete as u8, Ordering::Release);
        Ok(reuse_downstream)
    }

    async fn h1_response_filter(
        &self,
        session: &mut Session,
        mut task: HttpTask,
        ctx: &mut SV::CTX,
        serve_from_cache: &mut ServeFromCache,
        range_body_filter: &mut RangeBodyFilter,
        from_cache: bool, // are the task from cache already
    ) -> Result<HttpTask>
    where
        SV: ProxyHttp + Send + Sync,
        SV::CTX: Send + Sync,
    {
        // skip caching if already served from cache
        if !from_cache {
            if let Some(duration) = self.upstream_filter(session, &mut task, ctx).await? {
                trace!("delaying upstream response for {duration:?}");
                time::sleep(duration).await;
            }

            if let HttpTask::Header(header, _) = &task {
                reject_mismatched_h1_upgrade_101(session, header, "h1_upstream_filter")
                    .map_err(|e| e.into_up())?;
            }

            // cache the original response before any downstream transformation
            // requests that bypassed cache still need to run filters to see if the response has become cacheable
            if session.cache.enabled() || session.cache.bypassing() {
                if let Err(e) = self
                    .cache_http_task(session, &task, ctx, serve_from_cache)
                    .await
                {
                    session.cache.disable(NoCacheReason::StorageError);
                    if serve_from_cache.is_miss_body() {
                        // if the response stream cache body during miss but write fails, it has to
                        // give up the entire request
                        return Err(e);
                    } else {
                        // otherwise, continue processing the response
                        warn!(
                            "Fail to cache response: {}, {}",
                            e,
                            self.inner.request_summary(session, ctx)
                        );
                    }
                }
            }

            if !serve_from_cache.should_send_to_downstream() {
                return Ok(task);
            }
        } // else: cached/local response, no need to trigger upstream filters and caching

        // normally max file size is tracked in cache_http_task filters (when cache enabled),
        // we will track it in these filters before sending to downstream on specific conditions
        // when cache is disabled
        let track_max_cache_size = matches!(
            session.cache.phase(),
            CachePhase::Disabled(NoCacheReason::PredictedResponseTooLarge)
        );

        let res = match task {
            HttpTask::Header(mut header, end) => {
                /* Downstream revalidation/range, only needed when cache modified headers because otherwise origin
                 * will handle it */
                if session.upstream_headers_mutated_for_cache() {
                    self.downstream_response_conditional_filter(
                        serve_from_cache,
                        session,
                        &mut header,
                        ctx,
                    );
                    if !session.ignore_downstream_range {
                        let range_type = self.inner.range_header_filter(session, &mut header, ctx);
                        range_body_filter.set(range_type);
                    }
                }

                // TODO: just set version to Version::HTTP_11 unconditionally here,
                // (with another todo being an option to faithfully proxy the <1.1 responses)
                // as we are already trying to mutate this for HTTP/1.1 downstream reuse

                /* Convert HTTP 1.0 style response to chunked encoding so that we don't
                 * have to close the downstream connection */
                // these status codes / method cannot have body, so no need to add chunked encoding
                let no_body = session.req_header().method == http::method::Method::HEAD
                    || matches!(header.status.as_u16(), 204 | 304);
                if !no_body
                    && !header.status.is_informational()
                    && header
                        .headers
                        .get(http::header::TRANSFER_ENCODING)
                        .is_none()
                    && header.headers.get(http::header::CONTENT_LENGTH).is_none()
                    && !end
                {
                    // Upgrade the http version to 1.1 because 1.0/0.9 doesn't support chunked
                    header.set_version(Version::HTTP_11);
                    header.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
                }

                self.inner
                    .response_filter(session, &mut header, ctx)
                    .await?;
                if !from_cache {
                    // Re-check after response_filter in case it changed the final status to 101.
                    reject_mismatched_h1_upgrade_101(session, &header, "h1_response_filter")
                        .map_err(|e| e.into_in())?;
                }
                Ok(HttpTask::Header(header, end))
            }
            HttpTask::Body(data, end) => {
                if track_max_cache_size {
                    session
                        .cache
                        .track_body_bytes_for_max_file_size(data.as_ref().map_or(0, |d| d.len()));
                }

                // before it can mark it as cacheable again.
                let mut data = range_body_filter.filter_body(data);
                if let Some(duration) = self
                    .inner
                    .response_body_filter(session, &mut data, end, ctx)?
                {
                    trace!("delaying downstream response for {:?}", duration);
                    time::sleep(duration).await;
                }

                Ok(HttpTask::Body(data, end))
            }
            HttpTask::UpgradedBody(mut data, end) => {
                if track_max_cache_size {
                    session
                        .cache
                        .track_body_bytes_for_max_file_size(data.as_ref().map_or(0, |d| d.len()));
                }

                // range doesn't apply to upgraded body
                if let Some(duration) = self
                    .inner
                    .response_body_filter(session, &mut data, end, ctx)?
                {
                    trace!("delaying downstream upgraded response for {:?}", duration);
                    time::sleep(duration).await;
                }

                Ok(HttpTask::UpgradedBody(data, end))
            }
            HttpTask::Trailer(h) => Ok(HttpTask::Trailer(h)), // TODO: support trailers for h1
            HttpTask::Done => Ok(task),
            HttpTask::Failed(_) => Ok(task), // Do nothing just pass the error down
        };
        // On end, check if the response (based on file size) can be considered cacheable again
        if let Ok(task) = res.as_ref() {
            if track_max_cache_size
                && task.is_end()
                && !matches!(task, HttpTask::Failed(_))
                && !session.cache.exceeded_max_file_size()
            {
                session.cache.response_became_cacheable();
            }
        }
        res
    }

    /// The request body filters, the downstream modules' then the app's, over a piece of the
    /// body (`None` at its end).
    async fn filter_request_body(
        &self,
        session: &mut Session,
        data: &mut Option<Bytes>,
        end_of_body: bool,
        ctx: &mut SV::CTX,
    ) -> Result<()>
    where
        SV: ProxyHttp + Send + Sync,
        SV::CTX: Send + Sync,
    {
        session
            .downstream_modules_ctx
            .request_body_filter(data, end_of_body)
            .await?;
        // TODO: request body filter to have info about upgraded status?
        // (can also check session.was_upgraded())
        self.inner
            .request_body_filter(session, data, end_of_body, ctx)
            .await
    }

    // TODO:: use this function to replace send_body_to2
    async fn send_body_to_pipe(
        &self,
        session: &mut Session,
        mut data: Option<Bytes>,
        end_of_body: bool,
        tx: mpsc::Permit<'_, HttpTask>,
        ctx: &mut SV::CTX,
    ) -> Result<bool>
    where
        SV: ProxyHttp + Send + Sync,
        SV::CTX: Send + Sync,
    {
        // None: end of body
        // this var is to signal if downstream finish sending the body, which shouldn't be
        // affected by the request_body_filter
        let end_of_body = end_of_body || data.is_none();

        self.filter_request_body(session, &mut data, end_of_body, ctx)
            .await?;

        // the flag to signal to upstream
        let upstream_end_of_body = end_of_body || data.is_none();

        /* It is normal to get 0 bytes because of multi-chunk or request_body_filter decides not to
         * output anything yet.
         * Don't write 0 bytes to the network since it will be
         * treated as the terminating chunk */
        if !upstream_end_of_body && data.as_ref().is_some_and(|d| d.is_empty()) {
            return Ok(false);
        }

        debug!(
            "Read {} bytes body from downstream",
            data.as_ref().map_or(-1, |d| d.len() as isize)
        );

        // upgraded body needs to be marked
        if session.was_upgraded() {
            tx.send(HttpTask::UpgradedBody(data, upstream_end_of_body));
        } else {
            tx.send(HttpTask::Body(data, upstream_end_of_body));
        }

        Ok(end_of_body)
    }
}

/// rtsup (vendored changes 14 and 29): whether a request is proxied by one loop without task
/// pipes ([`HttpProxy::proxy_single_loop_1to1`]): one from an HTTP/1 client that neither
/// upgrades nor touches the cache, is not a retry, and has no body or one that came whole with
/// its header (as an engine.io polling POST does).
fn proxied_by_one_loop(session: &mut Session, upgrade: bool) -> bool {
    !upgrade
        // Not `!enabled()`: a bypassed cache may still turn into a miss mid-response.
        && matches!(session.cache.phase(), CachePhase::Disabled(_))
        && session.as_ref().get_retry_buffer().is_none()
        && (session.downstream_session.as_http1().is_some() && session.is_body_empty()
            || session.downstream_session.is_h1_body_buffered_whole())
}

/// Adds an upstream response task, or its read error (the request's send error first, if
/// ending the request failed) as the task the pipe would have carried, to a batch; whether the
/// response ends with it.
fn push_response_task(
    tasks: &mut Vec<HttpTask>,
    task: Result<HttpTask>,
    send_error: &mut Option<Box<Error>>,
) -> bool {
    match task {
        Ok(task) => {
            let end = task.is_end();
            tasks.push(task);
            end
        }
        Err(e) => {
            tasks.push(HttpTask::Failed(send_error.take().unwrap_or(e).into_up()));
            true
        }
    }
}

pub(crate) async fn send_body_to1(
    client_session: &mut HttpSessionV1,
    recv_task: Option<HttpTask>,
) -> Result<bool> {
    let body_done;

    if let Some(task) = recv_task {
        match task {
            HttpTask::Body(data, end) => {
                body_done = end;
                if let Some(d) = data {
                    let m = client_session.write_body(&d).await;
                    match m {
                        Ok(m) => match m {
                            Some(n) => {
                                debug!("Write {} bytes body to upstream", n);
                            }
                            None => {
                                warn!("Upstream body is already finished. Nothing to write");
                            }
                        },
                        Err(e) => {
                            return e.into_up().into_err();
                        }
                    }
                }
            }
            HttpTask::UpgradedBody(data, end) => {
                client_session.maybe_upgrade_body_writer();

                body_done = end;
                if let Some(d) = data {
                    let m = client_session.write_body(&d).await;
                    match m {
                        Ok(m) => {
                            match m {
                                Some(n) => {
                                    debug!("Write {} bytes upgraded body to upstream", n);
                                }
                                None => {
                                    warn!("Upstream upgraded body is already finished. Nothing to write");
                                }
                            }
                        }
                        Err(e) => {
                            return e.into_up().into_err();
                        }
                    }
                }
            }
            _ => {
                // should never happen, sender only sends body
                warn!("Unexpected task sent to upstream");
                body_done = true;
                // error here,
                // for client sessions that received upgrade but didn't
                // receive any UpgradedBody,
                // no more data is arriving so we should consider this
                // as downstream finalizing its upgrade payload
                client_session.maybe_upgrade_body_writer();
            }
        }
    } else {
        // sender dropped
        body_done = true;
        // for client sessions that received upgrade but didn't
        // receive any UpgradedBody,
        // no more data is arriving so we should consider this
        // as downstream finalizing its upgrade payload
        client_session.maybe_upgrade_body_writer();
    }

    if body_done {
        match client_session.finish_body().await {
            Ok(_) => {
                debug!("finish sending body to upstream");
                Ok(true)
            }
            Err(e) => e.into_up().into_err(),
        }
    } else {
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::io::AsyncWriteExt;

    struct ResponseFilter101;

    impl ProxyHttp for ResponseFilter101 {
        type CTX = ();

        fn new_ctx(&self) -> Self::CTX {}

        async fn upstream_peer(
            &self,
            _session: &mut Session,
            _ctx: &mut Self::CTX,
        ) -> Result<Box<HttpPeer>> {
            unreachable!("test calls h1_response_filter directly")
        }

        async fn response_filter(
            &self,
            _session: &mut Session,
            response: &mut ResponseHeader,
            _ctx: &mut Self::CTX,
        ) -> Result<()> {
            response.set_status(http::StatusCode::SWITCHING_PROTOCOLS)?;
            response.set_version(Version::HTTP_11);
            Ok(())
        }
    }

    /// Forwards everything; the tests call `proxy_1to1` with the upstream already chosen.
    struct Passthrough;

    impl ProxyHttp for Passthrough {
        type CTX = ();

        fn new_ctx(&self) -> Self::CTX {}

        async fn upstream_peer(
            &self,
            _session: &mut Session,
            _ctx: &mut Self::CTX,
        ) -> Result<Box<HttpPeer>> {
            unreachable!("test calls proxy_1to1 directly")
        }
    }

    /// A session that read `request` from a client, the client's end of the connection, and
    /// an upstream session whose other end the test plays.
    async fn h1_sessions(
        request: &[u8],
    ) -> (
        Session,
        tokio::io::DuplexStream,
        HttpSessionV1,
        tokio::io::DuplexStream,
    ) {
        let (mut client, server) = tokio::io::duplex(4096);
        client.write_all(request).await.expect("request written");
        let mut session = Session::new_h1(Box::new(server) as pingora_core::protocols::Stream);
        session.read_request().await.expect("request parses");
        let (upstream, proxy_side) = tokio::io::duplex(4096);
        let client_session =
            HttpSessionV1::new(Box::new(proxy_side) as pingora_core::protocols::Stream);
        (session, client, client_session, upstream)
    }

    /// Reads one request header off the upstream's end of the connection.
    async fn read_upstream_request(upstream: &mut tokio::io::DuplexStream) -> String {
        use tokio::io::AsyncReadExt;
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = upstream.read(&mut buf).await.expect("upstream read");
            assert!(n > 0, "proxy closed before the request header ended");
            got.extend_from_slice(&buf[..n]);
        }
        String::from_utf8(got).expect("ascii request")
    }

    #[tokio::test]
    async fn bodiless_request_gets_its_response_and_both_connections_stay_reusable() {
        use tokio::io::AsyncReadExt;
        let proxy = HttpProxy::new(Passthrough, Arc::new(ServerConf::default()));
        let (mut session, mut client, mut client_session, mut upstream) =
            h1_sessions(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n").await;
        let backend = tokio::spawn(async move {
            let request = read_upstream_request(&mut upstream).await;
            upstream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await
                .expect("response written");
            (request, upstream)
        });
        let peer = HttpPeer::new("127.0.0.1:1", false, String::new());

        let (down, up, err) = proxy
            .proxy_1to1(&mut session, &mut client_session, &peer, &mut ())
            .await;

        assert!(err.is_none(), "{err:?}");
        assert!(down && up, "reuse downstream {down}, upstream {up}");
        let (request, _upstream) = backend.await.expect("backend task");
        assert!(request.starts_with("GET /x HTTP/1.1\r\n"), "{request}");
        let mut response = vec![0u8; 1024];
        let n = client.read(&mut response).await.expect("client read");
        let response = String::from_utf8_lossy(&response[..n]);
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(response.ends_with("\r\n\r\nok"), "{response}");
    }

    /// Passes everything on and records each request body chunk its filter sees, with
    /// whether it ended the body.
    #[derive(Default)]
    struct BodyRecorder {
        seen: std::sync::Mutex<Vec<(Option<Bytes>, bool)>>,
    }

    impl ProxyHttp for BodyRecorder {
        type CTX = ();

        fn new_ctx(&self) -> Self::CTX {}

        async fn upstream_peer(
            &self,
            _session: &mut Session,
            _ctx: &mut Self::CTX,
        ) -> Result<Box<HttpPeer>> {
            unreachable!("test calls proxy_1to1 directly")
        }

        async fn request_body_filter(
            &self,
            _session: &mut Session,
            body: &mut Option<Bytes>,
            end_of_stream: bool,
            _ctx: &mut Self::CTX,
        ) -> Result<()> {
            self.seen
                .lock()
                .expect("not poisoned")
                .push((body.clone(), end_of_stream));
            Ok(())
        }
    }

    /// Proxies a POST of `hello` whose body the client sends with its header (`split` false)
    /// or after the proxy read the header (`split` true); what the upstream got, what the
    /// client got, the reuse decisions and the body filter's calls.
    async fn proxy_post(split: bool) -> (String, String, bool, bool, Vec<(Option<Bytes>, bool)>) {
        use tokio::io::AsyncReadExt;
        const HEADER: &[u8] = b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n";
        let proxy = HttpProxy::new(BodyRecorder::default(), Arc::new(ServerConf::default()));
        let request = [HEADER, b"hello"].concat();
        let sent = if split { HEADER } else { &request[..] };
        let (mut session, mut client, mut client_session, mut upstream) = h1_sessions(sent).await;
        if split {
            assert!(!session.downstream_session.is_h1_body_buffered_whole());
            client.write_all(b"hello").await.expect("body written");
        } else {
            assert!(session.downstream_session.is_h1_body_buffered_whole());
        }
        let backend = tokio::spawn(async move {
            let mut got = read_upstream_request(&mut upstream).await.into_bytes();
            let mut buf = [0u8; 64];
            while !got.ends_with(b"hello") {
                let n = upstream.read(&mut buf).await.expect("upstream read");
                assert!(n > 0, "proxy closed before the request body ended");
                got.extend_from_slice(&buf[..n]);
            }
            upstream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await
                .expect("response written");
            (String::from_utf8(got).expect("ascii request"), upstream)
        });
        let peer = HttpPeer::new("127.0.0.1:1", false, String::new());

        let (down, up, err) = proxy
            .proxy_1to1(&mut session, &mut client_session, &peer, &mut ())
            .await;

        assert!(err.is_none(), "{err:?}");
        assert_eq!(
            session.as_ref().get_retry_buffer().as_deref(),
            Some(&b"hello"[..]),
            "the body is kept for a retry"
        );
        let (request, _upstream) = backend.await.expect("backend task");
        let mut response = vec![0u8; 1024];
        let n = client.read(&mut response).await.expect("client read");
        let response = String::from_utf8_lossy(&response[..n]).into_owned();
        let seen = proxy.inner.seen.lock().expect("not poisoned").clone();
        (request, response, down, up, seen)
    }

    // rtsup changes 14 and 29: which requests the single loop takes.
    #[tokio::test]
    async fn one_loop_for_requests_without_a_body_or_with_one_that_came_whole() {
        for (request, upgrade, one_loop) in [
            (&b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"[..], false, true),
            (b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", false, true),
            (b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n40", false, true),
            (b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n4", false, false),
            (b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n", false, false),
            (
                b"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n40\r\n0\r\n\r\n",
                false,
                false,
            ),
            (b"GET /ws HTTP/1.1\r\nHost: a\r\n\r\n", true, false),
        ] {
            let (mut session, _client, _, _) = h1_sessions(request).await;
            assert_eq!(
                proxied_by_one_loop(&mut session, upgrade),
                one_loop,
                "{}",
                String::from_utf8_lossy(request)
            );
        }
        // A retry, whose body is replayed from the retry buffer, takes the general path.
        let (mut session, _client, _, _) =
            h1_sessions(b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n40").await;
        session.as_mut().enable_retry_buffering();
        session
            .downstream_session
            .read_body_or_idle(false)
            .await
            .expect("body read");
        assert!(!proxied_by_one_loop(&mut session, false));
    }

    // rtsup change 29: a body that came with its header goes through the single loop, whole,
    // through the body filter once; one that did not goes through the general path; both
    // reach the upstream intact and leave both connections reusable.
    #[tokio::test]
    async fn request_body_proxied_whole_whether_or_not_it_came_with_the_header() {
        for split in [false, true] {
            let (request, response, down, up, seen) = proxy_post(split).await;
            assert!(request.starts_with("POST /p HTTP/1.1\r\n"), "{request}");
            assert!(request.ends_with("\r\n\r\nhello"), "{request}");
            assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
            assert!(response.ends_with("\r\n\r\nok"), "{response}");
            assert!(
                down && up,
                "split {split}: reuse downstream {down}, upstream {up}"
            );
            let body = seen
                .iter()
                .filter_map(|(b, _)| b.as_deref())
                .collect::<Vec<_>>()
                .concat();
            assert_eq!(body, b"hello", "split {split}: {seen:?}");
            assert!(seen.last().is_some_and(|(_, end)| *end), "{seen:?}");
        }
        let (_, _, _, _, seen) = proxy_post(false).await;
        assert_eq!(seen, vec![(Some(Bytes::from_static(b"hello")), true)]);
    }

    #[tokio::test]
    async fn bodiless_request_whose_client_leaves_is_abandoned_not_waited_out() {
        let proxy = HttpProxy::new(Passthrough, Arc::new(ServerConf::default()));
        let (mut session, client, mut client_session, mut upstream) =
            h1_sessions(b"GET /poll HTTP/1.1\r\nHost: a\r\n\r\n").await;
        // The upstream holds the request, as a long poll does, and never answers.
        let backend = tokio::spawn(async move {
            read_upstream_request(&mut upstream).await;
            drop(client);
            std::future::pending::<()>().await;
        });
        let peer = HttpPeer::new("127.0.0.1:1", false, String::new());

        let (down, up, err) = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            proxy.proxy_1to1(&mut session, &mut client_session, &peer, &mut ()),
        )
        .await
        .expect("the client's close ends the request");

        backend.abort();
        let err = err.expect("an abandoned request is an error");
        assert_eq!(err.etype(), &ConnectionClosed, "{err}");
        assert_eq!(err.esource(), &ErrorSource::Downstream, "{err}");
        assert!(!down && !up, "reuse downstream {down}, upstream {up}");
    }

    #[tokio::test]
    async fn bodiless_request_whose_upstream_closes_is_an_upstream_error() {
        let proxy = HttpProxy::new(Passthrough, Arc::new(ServerConf::default()));
        let (mut session, _client, mut client_session, mut upstream) =
            h1_sessions(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n").await;
        let backend = tokio::spawn(async move {
            read_upstream_request(&mut upstream).await;
        });
        let peer = HttpPeer::new("127.0.0.1:1", false, String::new());

        let (down, up, err) = proxy
            .proxy_1to1(&mut session, &mut client_session, &peer, &mut ())
            .await;

        backend.await.expect("backend task");
        let err = err.expect("a response that never came is an error");
        assert_eq!(err.esource(), &ErrorSource::Upstream, "{err}");
        assert!(!down && !up, "reuse downstream {down}, upstream {up}");
    }

    /// Passes everything on, rewriting `Host` in its upstream filter when `rewrite` is set,
    /// and says its filters keep the authority when `keeps` is (a promise it breaks if it
    /// also rewrites).
    struct HostFilter {
        rewrite: Option<&'static str>,
        keeps: bool,
    }

    impl ProxyHttp for HostFilter {
        type CTX = ();

        fn new_ctx(&self) -> Self::CTX {}

        async fn upstream_peer(
            &self,
            _session: &mut Session,
            _ctx: &mut Self::CTX,
        ) -> Result<Box<HttpPeer>> {
            unreachable!("test calls proxy_1to1 directly")
        }

        async fn upstream_request_filter(
            &self,
            _session: &mut Session,
            upstream_request: &mut RequestHeader,
            _ctx: &mut Self::CTX,
        ) -> Result<()> {
            if let Some(host) = self.rewrite {
                upstream_request.insert_header(http::header::HOST, host)?;
            }
            Ok(())
        }

        fn filters_change_authority(&self) -> bool {
            !self.keeps
        }
    }

    const KEEPS: HostFilter = HostFilter {
        rewrite: None,
        keeps: true,
    };

    /// What `proxy` sends upstream for `request` (`Err` if it refuses to).
    async fn upstream_request_of<SV>(proxy: SV, request: &'static [u8]) -> Result<String, String>
    where
        SV: ProxyHttp<CTX = ()> + Send + Sync + 'static,
    {
        let proxy = HttpProxy::new(proxy, Arc::new(ServerConf::default()));
        let (mut session, _client, mut client_session, mut upstream) = h1_sessions(request).await;
        let backend = tokio::spawn(async move {
            let request = read_upstream_request(&mut upstream).await;
            upstream
                .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                .await
                .expect("response written");
            request
        });
        let peer = HttpPeer::new("127.0.0.1:1", false, String::new());
        let (_, _, err) = proxy
            .proxy_1to1(&mut session, &mut client_session, &peer, &mut ())
            .await;
        match err {
            Some(e) => {
                backend.abort();
                Err(e.to_string())
            }
            None => Ok(backend.await.expect("backend task")),
        }
    }

    // rtsup change 27: a proxy whose filters keep the authority sends what a proxy that has it
    // checked again sends, a Host-less absolute-form request still gets its Host.
    #[tokio::test]
    async fn authority_kept_by_the_filters_goes_upstream_as_when_checked_again() {
        for request in [
            &b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"GET http://a/x HTTP/1.1\r\n\r\n",
            b"GET http://a/x HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /x HTTP/1.0\r\n\r\n",
            b"CONNECT http://a:80/ HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            let checked = upstream_request_of(Passthrough, request).await;
            let kept = upstream_request_of(KEEPS, request).await;
            assert!(checked.is_ok(), "{checked:?}");
            assert_eq!(kept, checked, "{}", String::from_utf8_lossy(request));
        }
        let absolute = upstream_request_of(KEEPS, b"GET http://a/x HTTP/1.1\r\n\r\n")
            .await
            .expect("proxied");
        assert!(absolute.contains("\r\nHost: a\r\n"), "{absolute}");
    }

    // rtsup change 27: the authority is reconciled after filters that may change it (the
    // target follows a rewritten Host) and not after filters that say they do not (a filter
    // that says so and rewrites anyway is believed: the contract of `filters_change_authority`).
    #[tokio::test]
    async fn authority_reconciled_only_after_filters_that_may_change_it() {
        let request = &b"GET http://a/x HTTP/1.1\r\nHost: a\r\n\r\n"[..];
        let checked = HostFilter {
            rewrite: Some("b"),
            keeps: false,
        };
        let checked = upstream_request_of(checked, request)
            .await
            .expect("proxied");
        assert!(
            checked.starts_with("GET http://b/x HTTP/1.1\r\n"),
            "{checked}"
        );
        let believed = HostFilter {
            rewrite: Some("b"),
            keeps: true,
        };
        let believed = upstream_request_of(believed, request)
            .await
            .expect("proxied");
        assert!(
            believed.starts_with("GET http://a/x HTTP/1.1\r\n"),
            "{believed}"
        );
        assert!(believed.contains("\r\nHost: b\r\n"), "{believed}");
    }

    async fn upgrade_request_session() -> Session {
        let (mut client, server) = tokio::io::duplex(1024);
        client
            .write_all(
                b"GET / HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            )
            .await
            .expect("test request should be written");

        let mut session = Session::new_h1(Box::new(server) as pingora_core::protocols::Stream);
        session
            .read_request()
            .await
            .expect("test request should parse");
        session
    }

    #[tokio::test]
    async fn h1_response_filter_rejects_filter_created_101_with_upgrade_mismatch() {
        let proxy = HttpProxy::new(ResponseFilter101, Arc::new(ServerConf::default()));
        let mut session = upgrade_request_session().await;
        session.h1_upgrade_request_status = H1UpgradeRequestStatus {
            upstream: Some(false),
        };

        let mut ctx = ();
        let mut serve_from_cache = ServeFromCache::new();
        let mut range_body_filter = RangeBodyFilter::new();
        let task = HttpTask::Header(Box::new(ResponseHeader::build(200, Some(0)).unwrap()), true);

        let err = proxy
            .h1_response_filter(
                &mut session,
                task,
                &mut ctx,
                &mut serve_from_cache,
                &mut range_body_filter,
                false,
            )
            .await
            .unwrap_err();

        assert_eq!(err.etype(), &InvalidHTTPHeader);
        assert_eq!(err.esource(), &ErrorSource::Internal);
    }

    #[tokio::test]
    async fn h1_response_filter_rejects_upstream_101_upgrade_mismatch_as_upstream() {
        let proxy = HttpProxy::new(ResponseFilter101, Arc::new(ServerConf::default()));
        let mut session = upgrade_request_session().await;
        session.h1_upgrade_request_status = H1UpgradeRequestStatus {
            upstream: Some(false),
        };

        let mut ctx = ();
        let mut serve_from_cache = ServeFromCache::new();
        let mut range_body_filter = RangeBodyFilter::new();
        let mut response =
            ResponseHeader::build(http::StatusCode::SWITCHING_PROTOCOLS, Some(0)).unwrap();
        response.set_version(Version::HTTP_11);
        let task = HttpTask::Header(Box::new(response), true);

        let err = proxy
            .h1_response_filter(
                &mut session,
                task,
                &mut ctx,
                &mut serve_from_cache,
                &mut range_body_filter,
                false,
            )
            .await
            .unwrap_err();

        assert_eq!(err.etype(), &InvalidHTTPHeader);
        assert_eq!(err.esource(), &ErrorSource::Upstream);
    }
}
