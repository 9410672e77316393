//! A throwaway Redis Cluster: [`RedisCluster`].

use std::thread;
use std::time::{Duration, Instant};

use super::server::{RedisServer, info_field, redis_cli};

/// How long a new cluster may take to report `cluster_state:ok` on every node.
const CLUSTER_READY_TIMEOUT: Duration = Duration::from_secs(20);
/// The number of hash slots of Redis Cluster.
const CLUSTER_SLOTS: u16 = 16_384;

/// A Redis Cluster of `redis-server` child processes on `127.0.0.1`, each a [`RedisServer`]
/// with its own port, temporary directory and log, and `cluster-node-timeout 2000`.
///
/// Dropping the handle kills every node.
///
/// ```ignore
/// let cluster = RedisCluster::start(3, 0);
/// let client = redis::cluster::ClusterClient::new(cluster.urls()).expect("valid URLs");
/// ```
#[derive(Debug)]
pub(crate) struct RedisCluster {
    /// Every node, in the order given to `redis-cli --cluster create`.
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `masters * (1 + replicas_per_master)` nodes, joins them with
    /// `redis-cli --cluster create ... --cluster-replicas R`, and waits (up to 20 s) until
    /// [`RedisCluster::wait_until_ok`] holds. `redis-cli` decides which nodes become masters;
    /// ask [`RedisCluster::master_indices`] or [`RedisCluster::master_for_slot`].
    ///
    /// # Panics
    ///
    /// If `masters` is below 3 (Redis Cluster's minimum), or the cluster does not form (with
    /// each node's state and log).
    pub(crate) fn start(masters: usize, replicas_per_master: usize) -> Self {
        assert!(
            masters >= 3,
            "Redis Cluster needs at least 3 masters (`redis-cli --cluster create` refuses fewer), \
             got {masters}"
        );
        let count = masters * (1 + replicas_per_master);
        let nodes = (0..count)
            .map(|_| RedisServer::builder().cluster_node().start())
            .collect();
        let mut cluster = Self { nodes };

        let mut args = vec!["--cluster".to_owned(), "create".to_owned()];
        args.extend(cluster.nodes.iter().map(RedisServer::addr));
        args.extend([
            "--cluster-replicas".to_owned(),
            replicas_per_master.to_string(),
            "--cluster-yes".to_owned(),
        ]);
        if let Err(error) = redis_cli(&args) {
            panic!("creating the cluster failed: {error}\n{}", cluster.report());
        }
        cluster.wait_until_ok(CLUSTER_READY_TIMEOUT);
        cluster
    }

    /// Every node, masters and replicas, in creation order.
    pub(crate) fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// The node at `index`.
    pub(crate) fn node(&self, index: usize) -> &RedisServer {
        &self.nodes[index]
    }

    /// The node at `index`, to kill, pause, resume or restart it.
    pub(crate) fn node_mut(&mut self, index: usize) -> &mut RedisServer {
        &mut self.nodes[index]
    }

    /// `redis://127.0.0.1:PORT/` of every node, for `redis::cluster::ClusterClient::new`.
    pub(crate) fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// Kills node `index` with `SIGKILL`; see [`RedisServer::kill`].
    pub(crate) fn kill_node(&mut self, index: usize) {
        self.nodes[index].kill();
    }

    /// Freezes node `index` with `SIGSTOP`; see [`RedisServer::pause`].
    pub(crate) fn pause_node(&mut self, index: usize) {
        self.nodes[index].pause();
    }

    /// Lets a paused node `index` go on; see [`RedisServer::resume`].
    pub(crate) fn resume_node(&mut self, index: usize) {
        self.nodes[index].resume();
    }

    /// Starts node `index` again on its port; it rejoins the cluster from its
    /// `nodes-PORT.conf`, with no data. See [`RedisServer::restart`].
    pub(crate) fn restart_node(&mut self, index: usize) {
        self.nodes[index].restart();
    }

    /// The hash slot of `key` (`CLUSTER KEYSLOT`).
    pub(crate) fn key_slot(&self, key: &str) -> u16 {
        let reply = self.any_up_node().cli(&["CLUSTER", "KEYSLOT", key]);
        reply
            .parse()
            .unwrap_or_else(|_| panic!("CLUSTER KEYSLOT {key:?} answered {reply:?}"))
    }

    /// The index of the master that serves `slot` now, as a node that is up sees it
    /// (`CLUSTER NODES`).
    ///
    /// # Panics
    ///
    /// If no master that is not marked failed serves the slot.
    pub(crate) fn master_for_slot(&self, slot: u16) -> usize {
        assert!(slot < CLUSTER_SLOTS, "slot {slot} is out of range");
        let topology = self.any_up_node().cli(&["CLUSTER", "NODES"]);
        for node in topology.lines().filter_map(NodeLine::parse) {
            if node.is_live_master() && node.serves(slot) {
                return self.index_of_port(node.port);
            }
        }
        panic!("no live master serves slot {slot}:\n{topology}");
    }

    /// The index of the master that serves `key` now; see [`RedisCluster::master_for_slot`].
    pub(crate) fn master_for_key(&self, key: &str) -> usize {
        self.master_for_slot(self.key_slot(key))
    }

    /// The indices of the nodes that are masters and not marked failed, in ascending order.
    pub(crate) fn master_indices(&self) -> Vec<usize> {
        let topology = self.any_up_node().cli(&["CLUSTER", "NODES"]);
        let mut masters: Vec<usize> = topology
            .lines()
            .filter_map(NodeLine::parse)
            .filter(NodeLine::is_live_master)
            .map(|node| self.index_of_port(node.port))
            .collect();
        masters.sort_unstable();
        masters
    }

    /// Waits until every node that is up (neither killed nor paused through this handle)
    /// reports `cluster_state:ok` with all slots assigned and all nodes known, every replica
    /// among them has its link to its master up, and all of them agree on each node's role,
    /// master and failure (`CLUSTER NODES`), so that whichever node is asked about the topology
    /// gives the same answer. (Redis 6.2 spreads a new replica's role by gossip, well after the
    /// replica itself has synced.)
    ///
    /// # Panics
    ///
    /// After `timeout`, with each node's state and log.
    pub(crate) fn wait_until_ok(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let Some(reason) = self.first_node_not_ok() else {
                return;
            };
            if Instant::now() >= deadline {
                panic!(
                    "the cluster was not ok within {timeout:?}: {reason}\n{}",
                    self.report()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Why some up node is not ok yet, or `None` if all are.
    fn first_node_not_ok(&mut self) -> Option<String> {
        let count = self.nodes.len().to_string();
        let wanted_slots = CLUSTER_SLOTS.to_string();
        for node in &mut self.nodes {
            if !node.is_running() || node.is_paused() {
                continue;
            }
            let info = match node.try_cli(&["CLUSTER", "INFO"]) {
                Ok(info) => info,
                Err(error) => return Some(error),
            };
            let checks = [
                ("cluster_state", "ok"),
                ("cluster_slots_assigned", wanted_slots.as_str()),
                ("cluster_known_nodes", count.as_str()),
            ];
            for (field, wanted) in checks {
                let value = info_field(&info, field);
                if value != Some(wanted) {
                    return Some(format!(
                        "node on port {} has {field}:{}",
                        node.port(),
                        value.unwrap_or("(missing)")
                    ));
                }
            }
            let replication = match node.try_cli(&["INFO", "replication"]) {
                Ok(info) => info,
                Err(error) => return Some(error),
            };
            if info_field(&replication, "role") == Some("slave")
                && info_field(&replication, "master_link_status") != Some("up")
            {
                return Some(format!(
                    "replica on port {} has not synced with its master",
                    node.port()
                ));
            }
        }
        self.first_disagreement()
    }

    /// Which up node sees the topology differently from the first up node, or `None` if all
    /// agree.
    fn first_disagreement(&self) -> Option<String> {
        let mut first: Option<(u16, Vec<NodeRole>)> = None;
        for node in self.nodes.iter().filter(|node| node.is_up()) {
            let topology = match node.try_cli(&["CLUSTER", "NODES"]) {
                Ok(topology) => topology,
                Err(error) => return Some(error),
            };
            let mut view: Vec<NodeRole> = topology
                .lines()
                .filter_map(NodeLine::parse)
                .map(|line| line.role())
                .collect();
            view.sort();
            match &first {
                None => first = Some((node.port(), view)),
                Some((port, seen)) if *seen != view => {
                    return Some(format!(
                        "the nodes on ports {port} and {} disagree on the topology: \
                         {seen:?} and {view:?}",
                        node.port()
                    ));
                }
                Some(_) => {}
            }
        }
        None
    }

    /// A node to ask about the cluster.
    fn any_up_node(&self) -> &RedisServer {
        self.nodes
            .iter()
            .find(|node| node.is_up())
            .expect("every node of the cluster is killed or paused")
    }

    /// The index of the node listening on `port`.
    fn index_of_port(&self, port: u16) -> usize {
        self.nodes
            .iter()
            .position(|node| node.port() == port)
            .unwrap_or_else(|| panic!("no node of this cluster listens on port {port}"))
    }

    /// Each node's port, `CLUSTER NODES` and the end of its log, for failure messages.
    fn report(&self) -> String {
        let mut report = String::new();
        for (index, node) in self.nodes.iter().enumerate() {
            report.push_str(&format!("=== node {index} (port {}) ===\n", node.port()));
            if node.is_up() {
                let topology = node
                    .try_cli(&["CLUSTER", "NODES"])
                    .unwrap_or_else(|error| error);
                report.push_str(&format!("CLUSTER NODES:\n{topology}\n"));
            } else {
                report.push_str("(killed or paused)\n");
            }
            let log = node.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(30)..];
            report.push_str(&tail.join("\n"));
            report.push('\n');
        }
        report
    }
}

/// One line of `CLUSTER NODES`:
/// `<id> <ip:port@cport[,hostname]> <flags> <master> <ping-sent> <pong-recv> <config-epoch>
/// <link-state> <slot> <slot> ... <slot>`.
struct NodeLine<'a> {
    /// The client port.
    port: u16,
    /// Comma-separated flags: `myself`, `master`, `slave`, `fail?`, `fail`, ...
    flags: &'a str,
    /// The node ID of a replica's master; `-` for a master.
    master: &'a str,
    /// Slot ranges (`0-5460`), single slots (`5461`) and migration notes (`[...]`).
    slots: Vec<&'a str>,
}

impl<'a> NodeLine<'a> {
    /// Parses a line; `None` for a blank or malformed one.
    fn parse(line: &'a str) -> Option<Self> {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 8 {
            return None;
        }
        let host_port = fields[1].split(['@', ',']).next()?;
        let port = host_port.rsplit_once(':')?.1.parse().ok()?;
        Some(Self {
            port,
            flags: fields[2],
            master: fields[3],
            slots: fields[8..].to_vec(),
        })
    }

    /// Whether `flag` is among the node's flags.
    fn has(&self, flag: &str) -> bool {
        self.flags.split(',').any(|own| own == flag)
    }

    /// Whether the node is a master that the cluster has not marked failed.
    fn is_live_master(&self) -> bool {
        self.has("master") && !self.has("fail")
    }

    /// What every node of a settled cluster sees alike about this one.
    fn role(&self) -> NodeRole {
        NodeRole {
            port: self.port,
            master: self.has("master"),
            replica_of: self.master.to_owned(),
            failed: self.has("fail"),
        }
    }

    /// Whether the node's slot list includes `slot`.
    fn serves(&self, slot: u16) -> bool {
        self.slots
            .iter()
            .filter(|range| !range.starts_with('['))
            .filter_map(|range| {
                let (low, high) = range.split_once('-').unwrap_or((range, range));
                Some((low.parse::<u16>().ok()?, high.parse::<u16>().ok()?))
            })
            .any(|(low, high)| (low..=high).contains(&slot))
    }
}

/// One node as another node sees it, for [`RedisCluster::wait_until_ok`]: the parts of
/// `CLUSTER NODES` that all nodes agree on once the cluster has settled (unlike `myself`, the
/// local suspicion `fail?`, or a migrating slot's note).
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct NodeRole {
    /// The client port.
    port: u16,
    /// Whether it is a master (`master` flag).
    master: bool,
    /// Its master's node ID if it is a replica, `-` if not.
    replica_of: String,
    /// Whether the cluster has marked it failed (`fail`, not the local `fail?`).
    failed: bool,
}
