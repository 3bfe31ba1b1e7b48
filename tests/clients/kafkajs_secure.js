// kafkajs over a secured listener: produce and consume with SASL (plain, scram-sha-256,
// scram-sha-512) over TLS or plain TCP; with COUNT 0 the login must fail.
// Usage: node kafkajs_secure.js BROKER TLS(true|false) MECHANISM USER PASSWORD CAFILE TOPIC COUNT
// Prints "roundtrip ok COUNT", or "refused NAME".
const fs = require('fs');
const { Kafka, logLevel } = require('kafkajs');

async function main() {
  const [broker, tls, mechanism, username, password, cafile, topic, countText] = process.argv.slice(2);
  const count = Number(countText);
  const kafka = new Kafka({
    clientId: 'moldau-secure',
    brokers: [broker],
    logLevel: logLevel.NOTHING,
    ssl: tls === 'true' ? { ca: [fs.readFileSync(cafile, 'utf-8')] } : false,
    sasl: { mechanism, username, password },
    retry: { retries: count === 0 ? 0 : 5 },
  });
  const admin = kafka.admin();
  if (count === 0) {
    try {
      await admin.connect();
      await admin.listTopics();
    } catch (e) {
      console.log(`refused ${e.name}`);
      return;
    }
    throw new Error('a wrong password logged in');
  }
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: 1, replicationFactor: 1 }], waitForLeaders: true });
  await admin.disconnect();
  const producer = kafka.producer();
  await producer.connect();
  const messages = [];
  for (let i = 0; i < count; i++) messages.push({ key: `k${i}`, value: `js-${i}` });
  await producer.send({ topic, acks: -1, messages });
  await producer.disconnect();
  const seen = new Set();
  const consumer = kafka.consumer({ groupId: `${topic}-group` });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`only ${seen.size} of ${count} consumed`)), 30000);
    consumer.run({
      eachMessage: async ({ message }) => {
        seen.add(message.value.toString());
        if (seen.size === count) {
          clearTimeout(timer);
          resolve();
        }
      },
    });
  });
  await consumer.disconnect();
  console.log(`roundtrip ok ${count}`);
}

main().then(() => process.exit(0), (e) => {
  console.error(e);
  process.exit(1);
});
