PRAGMA foreign_keys=OFF;
BEGIN TRANSACTION;
CREATE TABLE node (
	name VARCHAR NOT NULL, 
	credential_hash VARCHAR NOT NULL, 
	admin_state VARCHAR NOT NULL, 
	alive BOOLEAN NOT NULL, 
	inventory VARCHAR NOT NULL, 
	registered_at FLOAT NOT NULL, 
	last_heartbeat FLOAT NOT NULL, 
	cordon_reason VARCHAR NOT NULL, 
	cordoned_by VARCHAR NOT NULL, 
	cordoned_at FLOAT NOT NULL, 
	generation INTEGER NOT NULL, 
	PRIMARY KEY (name)
);
INSERT INTO node VALUES('gpu-01','c17612245633e41a1647300cebb2f628b22f900fd29abb051ac89bd96a1e2e2f','cordoned',1,replace('{\n  "hostname": "vm",\n  "gpus": [\n    {\n      "uuid": "GPU-0acb0c0b-320a-5cd4-8aee-a9b5cad8bc35",\n      "name": "A100-80GB",\n      "memoryTotal": "85899345920",\n      "computeCapability": "8.0",\n      "driver": "declared",\n      "temperature": -1,\n      "declared": true\n    },\n    {\n      "uuid": "GPU-f06bc83c-e073-55bf-afd4-7f28af37fa22",\n      "index": 1,\n      "name": "A100-80GB",\n      "memoryTotal": "85899345920",\n      "computeCapability": "8.0",\n      "driver": "declared",\n      "temperature": -1,\n      "declared": true\n    }\n  ],\n  "cpuCount": 2,\n  "ramTotal": "25276059648",\n  "ramAvailable": "20688080896",\n  "modelsDir": "/tmp/oldfleet/a1/models",\n  "diskTotal": "270553174016",\n  "diskFree": "76713267200",\n  "engines": [\n    {\n      "name": "llama.cpp",\n      "version": "0.3.36",\n      "path": "/root/.cache/fleet/engines/llama.cpp/0.3.36/bin/llama-server"\n    },\n    {\n      "name": "vllm",\n      "version": "0.32.0",\n      "path": "/root/.cache/fleet/engines/vllm/0.32.0/venv/bin/vllm"\n    }\n  ],\n  "agentVersion": "0.1.0",\n  "gpuProbe": "declared"\n}','\n',char(10)),1796010176.1037061214,1796010216.1820499897,'test','root@vm',1796010182.9663131237,1);
CREATE TABLE deployment (
	name VARCHAR NOT NULL, 
	model VARCHAR NOT NULL, 
	quant VARCHAR NOT NULL, 
	engine VARCHAR NOT NULL, 
	context INTEGER NOT NULL, 
	replicas_wanted INTEGER NOT NULL, 
	device VARCHAR NOT NULL, 
	strategy VARCHAR NOT NULL, 
	tp INTEGER NOT NULL, 
	source VARCHAR NOT NULL, 
	file VARCHAR NOT NULL, 
	why VARCHAR NOT NULL, 
	state VARCHAR NOT NULL, 
	created_at FLOAT NOT NULL, 
	estimate VARCHAR NOT NULL, 
	request VARCHAR NOT NULL, 
	max_moves INTEGER NOT NULL, 
	PRIMARY KEY (name)
);
INSERT INTO deployment VALUES('chat','llama3.1-8b','bf16','vllm',131072,1,'gpu','pack',1,'meta-llama/Llama-3.1-8B-Instruct','','','active',1796010182.5390617847,'{"weights": 16060522496, "kv_cache": 17179869184, "activations": 4326424576, "runtime": 1197473792, "total": 38764290048}','{"model": "llama3.1-8b", "quant": "bf16", "engine": "", "context": 0, "tp": 0, "node": "", "gpu_type": "", "labels": {}, "device": "gpu", "strategy": "pack"}',1);
CREATE TABLE token (
	id INTEGER NOT NULL, 
	kind VARCHAR NOT NULL, 
	token_hash VARCHAR NOT NULL, 
	created_at FLOAT NOT NULL, 
	expires_at FLOAT, 
	revoked BOOLEAN NOT NULL, 
	PRIMARY KEY (id)
);
INSERT INTO token VALUES(1,'join','2b4be6624474a43a58ed15fd493f059d98baa22f085eedabb461d5c29678c6cb',1796010172.8008751869,NULL,0);
INSERT INTO token VALUES(2,'admin','6ef6106f4c397d197406ad5fb7669bdc704e0744eb0d12071ecfdecca082db8b',1796010172.8091900348,NULL,0);
INSERT INTO token VALUES(3,'join','0efdacf57bbdb012b3bba530697a1c1575a9e3e9569a61398b98964154c3f4ed',1796010214.040741682,1796013814.040741682,0);
CREATE TABLE event (
	id INTEGER NOT NULL, 
	at FLOAT NOT NULL, 
	kind VARCHAR NOT NULL, 
	node VARCHAR NOT NULL, 
	message VARCHAR NOT NULL, 
	PRIMARY KEY (id)
);
INSERT INTO event VALUES(1,1796010176.1037061214,'node.registered','gpu-01','');
INSERT INTO event VALUES(2,1796010182.5528287887,'deployment.placed','','chat: 1 replica(s)');
INSERT INTO event VALUES(3,1796010182.9663131237,'node.cordoned','gpu-01','test (by root@vm)');
CREATE TABLE apikey (
	id INTEGER NOT NULL, 
	name VARCHAR NOT NULL, 
	key_hash VARCHAR NOT NULL, 
	created_at FLOAT NOT NULL, 
	revoked BOOLEAN NOT NULL, 
	PRIMARY KEY (id)
);
CREATE TABLE gpu (
	uuid VARCHAR NOT NULL, 
	node VARCHAR NOT NULL, 
	"index" INTEGER NOT NULL, 
	name VARCHAR NOT NULL, 
	memory_total INTEGER NOT NULL, 
	memory_used INTEGER NOT NULL, 
	compute_capability VARCHAR NOT NULL, 
	driver VARCHAR NOT NULL, 
	utilization INTEGER NOT NULL, 
	temperature INTEGER NOT NULL, 
	declared BOOLEAN NOT NULL, 
	PRIMARY KEY (uuid), 
	FOREIGN KEY(node) REFERENCES node (name)
);
INSERT INTO gpu VALUES('GPU-0acb0c0b-320a-5cd4-8aee-a9b5cad8bc35','gpu-01',0,'A100-80GB',85899345920,0,'8.0','declared',0,-1,1);
INSERT INTO gpu VALUES('GPU-f06bc83c-e073-55bf-afd4-7f28af37fa22','gpu-01',1,'A100-80GB',85899345920,0,'8.0','declared',0,-1,1);
CREATE TABLE replica (
	id VARCHAR NOT NULL, 
	deployment VARCHAR NOT NULL, 
	ordinal INTEGER NOT NULL, 
	node VARCHAR NOT NULL, 
	desired VARCHAR NOT NULL, 
	state VARCHAR NOT NULL, 
	endpoint VARCHAR NOT NULL, 
	api_key VARCHAR NOT NULL, 
	gpu_memory_utilization FLOAT NOT NULL, 
	tp INTEGER NOT NULL, 
	ram_bytes INTEGER NOT NULL, 
	kv_cache_bytes INTEGER NOT NULL, 
	message VARCHAR NOT NULL, 
	restarts INTEGER NOT NULL, 
	created_at FLOAT NOT NULL, 
	healthy_since FLOAT NOT NULL, 
	replaces VARCHAR NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(deployment) REFERENCES deployment (name), 
	FOREIGN KEY(node) REFERENCES node (name)
);
INSERT INTO replica VALUES('chat-0-c037e5','chat',0,'gpu-01','run','healthy','','gWF99i5FkRqnWLBvlnt7DPh1QmprlPb-',0.45119999999999998996,1,0,17179869184,'declared node: engine not launched',0,1796010182.5390617847,1796010182.6017129421,'');
CREATE TABLE drain (
	node VARCHAR NOT NULL, 
	state VARCHAR NOT NULL, 
	started_at FLOAT NOT NULL, 
	deadline FLOAT NOT NULL, 
	force BOOLEAN NOT NULL, 
	reason VARCHAR NOT NULL, 
	"by" VARCHAR NOT NULL, 
	message VARCHAR NOT NULL, 
	PRIMARY KEY (node), 
	FOREIGN KEY(node) REFERENCES node (name)
);
CREATE TABLE join_token_meta (
	token_id INTEGER NOT NULL, 
	description VARCHAR NOT NULL, 
	PRIMARY KEY (token_id), 
	FOREIGN KEY(token_id) REFERENCES token (id)
);
INSERT INTO join_token_meta VALUES(3,'');
CREATE TABLE reservation (
	id INTEGER NOT NULL, 
	replica VARCHAR NOT NULL, 
	gpu_uuid VARCHAR NOT NULL, 
	gpu_index INTEGER NOT NULL, 
	bytes INTEGER NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(replica) REFERENCES replica (id), 
	FOREIGN KEY(gpu_uuid) REFERENCES gpu (uuid)
);
INSERT INTO reservation VALUES(1,'chat-0-c037e5','GPU-0acb0c0b-320a-5cd4-8aee-a9b5cad8bc35',0,38764290048);
CREATE INDEX ix_token_token_hash ON token (token_hash);
CREATE INDEX ix_token_kind ON token (kind);
CREATE INDEX ix_event_at ON event (at);
CREATE INDEX ix_apikey_name ON apikey (name);
CREATE INDEX ix_apikey_key_hash ON apikey (key_hash);
CREATE INDEX ix_gpu_node ON gpu (node);
CREATE INDEX ix_replica_deployment ON replica (deployment);
CREATE INDEX ix_replica_node ON replica (node);
CREATE INDEX ix_reservation_gpu_uuid ON reservation (gpu_uuid);
CREATE INDEX ix_reservation_replica ON reservation (replica);
COMMIT;
